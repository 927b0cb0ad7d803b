package wsgateway

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the admission limits of one replica; a zero value means no limit.
type Limits struct {
	// MaxConnections caps live connections on this replica (503 beyond, so that a
	// proxy tries another replica).
	MaxConnections int `env:"ROOMCAST_MAX_CONNECTIONS" envDefault:"0" help:"live connections on this replica; over it upgrades get 503 (0: no limit)"`
	// AcceptRate caps upgrades per second on this replica, smoothing reconnect storms
	// (503 with Retry-After beyond); AcceptBurst is its bucket (default AcceptRate).
	AcceptRate  float64 `env:"ROOMCAST_ACCEPT_RATE" envDefault:"0" help:"upgrades per second on this replica; over it 503 with Retry-After (0: no limit)"`
	AcceptBurst int
	// MaxConnectionsPerIP caps live connections per client address.
	MaxConnectionsPerIP int `env:"ROOMCAST_MAX_CONNECTIONS_PER_IP" envDefault:"0" help:"live connections per client address; over it 429 (0: no limit)"`
	// TrustedProxies are the peers whose X-Forwarded-For is believed (nginx); the client
	// address is then the last entry not itself a trusted proxy.
	TrustedProxies Prefixes `env:"ROOMCAST_TRUSTED_PROXIES" help:"comma-separated CIDRs whose X-Forwarded-For names the client (the proxy in front)"`
	// MaxRoomMembers caps the members of one room on this replica.
	MaxRoomMembers int `env:"ROOMCAST_MAX_ROOM_MEMBERS" envDefault:"0" help:"members of one room on this replica; over it 503 (0: no limit)"`
}

// Admission reasons, the label of roomcast_admission_rejected_total.
const (
	rejectMaxConnections = "max_connections"
	rejectAcceptRate     = "accept_rate"
	rejectPerIP          = "per_ip"
	rejectRoomFull       = "room_full"
	rejectDraining       = "draining"
	rejectNotReady       = "not_ready"
)

var rejectReasons = []string{rejectMaxConnections, rejectAcceptRate, rejectPerIP, rejectRoomFull, rejectDraining, rejectNotReady}

// admission enforces Limits. It is safe for concurrent use.
type admission struct {
	limits Limits
	accept *rate.Limiter

	mu    sync.Mutex
	perIP map[netip.Addr]int
}

func newAdmission(l Limits) *admission {
	a := &admission{limits: l, perIP: make(map[netip.Addr]int)}
	if l.AcceptRate > 0 {
		burst := l.AcceptBurst
		if burst <= 0 {
			burst = max(1, int(l.AcceptRate))
		}
		a.accept = rate.NewLimiter(rate.Limit(l.AcceptRate), burst)
	}
	return a
}

// takeAccept consumes one upgrade from the accept-rate budget, or says how long to wait.
func (a *admission) takeAccept(now time.Time) (ok bool, retryAfter time.Duration) {
	if a.accept == nil {
		return true, 0
	}
	r := a.accept.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// holdIP counts a connection for addr; release undoes it. ok is false when addr is at
// its cap.
func (a *admission) holdIP(addr netip.Addr) (release func(), ok bool) {
	if a.limits.MaxConnectionsPerIP <= 0 || !addr.IsValid() {
		return func() {}, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.perIP[addr] >= a.limits.MaxConnectionsPerIP {
		return nil, false
	}
	a.perIP[addr]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.perIP[addr]--; a.perIP[addr] <= 0 {
				delete(a.perIP, addr)
			}
		})
	}, true
}

// clientAddr is the address of the client behind r: the peer, or, when the peer is a
// trusted proxy, the nearest X-Forwarded-For entry that is not.
func (a *admission) clientAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if !a.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer // a garbled header: count the proxy itself
		}
		if hop = hop.Unmap(); !a.trusted(hop) {
			return hop
		}
	}
	return peer
}

func (a *admission) trusted(addr netip.Addr) bool {
	for _, p := range a.limits.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// admit applies readiness and the admission limits; on refusal it has answered the
// request. The returned release gives the client's per-address slot back when the
// connection ends.
func (g *Gateway) admit(w http.ResponseWriter, r *http.Request, room string) (release func(), ok bool) {
	if err := g.waitReady(r.Context()); err != nil {
		g.rejected.WithLabelValues(rejectNotReady).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "not ready", err.Error())
		return nil, false
	}
	l := g.cfg.Limits
	if l.MaxConnections > 0 && g.hub.Len() >= l.MaxConnections {
		g.rejected.WithLabelValues(rejectMaxConnections).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "too many connections",
			"this replica holds its maximum of "+strconv.Itoa(l.MaxConnections)+" connections")
		return nil, false
	}
	if l.MaxRoomMembers > 0 && g.hub.RoomSize(room) >= l.MaxRoomMembers {
		g.rejected.WithLabelValues(rejectRoomFull).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "room full",
			"the room has its maximum of "+strconv.Itoa(l.MaxRoomMembers)+" members on this replica")
		return nil, false
	}
	release, ok = g.admission.holdIP(g.admission.clientAddr(r))
	if !ok {
		g.rejected.WithLabelValues(rejectPerIP).Inc()
		writeJSONError(w, http.StatusTooManyRequests, "too many connections from this address",
			"at most "+strconv.Itoa(l.MaxConnectionsPerIP)+" connections per client address")
		return nil, false
	}
	if ok, wait := g.admission.takeAccept(time.Now()); !ok {
		release()
		g.rejected.WithLabelValues(rejectAcceptRate).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeJSONError(w, http.StatusServiceUnavailable, "too many new connections",
			"this replica accepts "+strconv.FormatFloat(l.AcceptRate, 'g', -1, 64)+" upgrades per second; retry")
		return nil, false
	}
	return release, true
}

// readyPoll is how often waitReady asks the broker again.
const readyPoll = 20 * time.Millisecond

// waitReady returns nil once the broker is ready, or its reason not to be after
// Config.ReadyWait (or when ctx ends). A replica whose NATS member left is back on
// another within a moment: a client that arrives meanwhile waits for that rather than
// being refused, which behind nginx would be refused by every replica at once when the
// others are draining.
func (g *Gateway) waitReady(ctx context.Context) error {
	err := g.broker.Ready()
	if err == nil || g.cfg.ReadyWait <= 0 {
		return err
	}
	deadline := time.NewTimer(g.cfg.ReadyWait)
	defer deadline.Stop()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return err
		case <-deadline.C:
			return err
		case <-tick.C:
			if err = g.broker.Ready(); err == nil {
				return nil
			}
		}
	}
}
