package wsgateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"roomcast/pkg/auth"
	"roomcast/pkg/chat"
	"roomcast/pkg/server/hub"
)

// ServeHTTP answers an upgrade in steps, each of which may refuse the request with a
// JSON error (and count why): check the request, authenticate it, admit it, join its
// room, upgrade the connection, then replay what a resuming client missed.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, ok := g.checkRequest(w, r)
	if !ok {
		return
	}
	if !g.authenticate(w, r, &req) {
		return
	}
	releaseIP, ok := g.admit(w, r, req.room)
	if !ok {
		return
	}
	member, ok := g.join(w, r, req)
	if !ok {
		releaseIP()
		return
	}
	if err := g.upgrade(w, r, member, req, releaseIP); err != nil {
		releaseIP()
		g.hub.Leave(member)
		g.log.Debug("upgrade failed", "room", req.room, "err", err)
		return
	}
	if req.resume != nil {
		go g.replay(member, *req.resume)
	}
}

// upgradeRequest is what ServeHTTP has learnt about an upgrade it goes on with.
type upgradeRequest struct {
	room    string
	resume  *resumeRequest // nil unless the client resumes and history is on
	claims  *auth.Claims   // nil when auth is off
	offered []string       // the subprotocols the client offered
}

// checkRequest checks what needs no state: the method, the room's name, the Origin, the
// resume parameters and the WebSocket headers.
func (g *Gateway) checkRequest(w http.ResponseWriter, r *http.Request) (upgradeRequest, bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed", "use GET with a WebSocket upgrade")
		return upgradeRequest{}, false
	}
	room, err := RoomFromPath(r.URL.Path)
	if err != nil {
		g.errs.Count(chat.KindInvalidRoom)
		writeJSONError(w, http.StatusBadRequest, "invalid room name",
			"a room name is 1 to 64 characters of [A-Za-z0-9_-]: "+err.Error())
		return upgradeRequest{}, false
	}
	// No Origin header: not a browser, which no other site can make connect.
	if origin := r.Header.Get("Origin"); origin != "" && !g.cfg.AllowedOrigins.Allows(origin, r.Host) {
		g.errs.Count(chat.KindForbiddenOrigin)
		detail := "Origin " + strconv.Quote(origin) + " is not in ROOMCAST_ALLOWED_ORIGINS"
		if len(g.cfg.AllowedOrigins) == 0 {
			detail = "Origin " + strconv.Quote(origin) + " is not this host; ROOMCAST_ALLOWED_ORIGINS lists the origins of pages served elsewhere"
		}
		writeJSONError(w, http.StatusForbidden, "origin not allowed", detail)
		return upgradeRequest{}, false
	}
	resume, err := parseResume(r)
	if err != nil {
		g.errs.Count(chat.KindBadRequest)
		writeJSONError(w, http.StatusBadRequest, "invalid resume parameters", err.Error())
		return upgradeRequest{}, false
	}
	if g.cfg.History == nil {
		resume = nil // accepted, and ignored: there is nothing to replay
	}
	if !isWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		writeJSONError(w, http.StatusUpgradeRequired, "websocket upgrade required",
			"connect with a WebSocket client (Upgrade: websocket, Sec-WebSocket-Version: 13)")
		return upgradeRequest{}, false
	}
	return upgradeRequest{room: room, resume: resume}, true
}

// join makes the client a member of its room: held, for a client that resumes, until its
// replay is sent.
func (g *Gateway) join(w http.ResponseWriter, r *http.Request, req upgradeRequest) (*hub.Member, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.SubscribeTimeout)
	defer cancel()
	var member *hub.Member
	var err error
	if req.resume != nil {
		member, err = g.hub.JoinHeld(ctx, req.room)
	} else {
		member, err = g.hub.Join(ctx, req.room)
	}
	switch {
	case errors.Is(err, hub.ErrDraining):
		g.rejected.WithLabelValues(rejectDraining).Inc()
		writeJSONError(w, http.StatusServiceUnavailable, "draining", "this replica is shutting down; reconnect")
		return nil, false
	case err != nil:
		g.log.Warn("join failed", "room", req.room, "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return nil, false
	}
	return member, true
}

// upgrade hijacks the connection, answers the handshake and attaches member to it.
func (g *Gateway) upgrade(w http.ResponseWriter, r *http.Request, member *hub.Member, req upgradeRequest, releaseIP func()) error {
	upgrader := g.upgrader
	switch {
	case slices.Contains(req.offered, SubprotocolBatch):
		upgrader = g.upgraderB
		member.Batch()
	case slices.Contains(req.offered, SubprotocolV1):
		upgrader = g.upgraderV1
	case len(req.offered) > 0:
		// A browser that sent only bearer.<token> needs it selected back.
		for _, p := range req.offered {
			if strings.HasPrefix(p, bearerProtocolPrefix) {
				upgrader = g.newUpgrader([]string{p})
				break
			}
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSONError(w, http.StatusInternalServerError, "internal error", "connection cannot be hijacked")
		return errors.New("response writer is not a Hijacker")
	}
	raw, brw, err := hj.Hijack()
	if err != nil {
		return fmt.Errorf("hijacking connection: %w", err)
	}
	if brw.Reader.Buffered() > 0 {
		_ = raw.Close()
		return errors.New("client sent data before the handshake completed")
	}
	c := newWSConn(raw, member)
	c.releaseIP = releaseIP
	// A small reader per connection: idle connections are the common case, and gws
	// reads larger payloads straight into its own buffers.
	br := bufio.NewReaderSize(&c.net, readBufferSize)
	socket, err := upgrader.UpgradeFromConn(&c.net, br, r)
	if err != nil {
		return fmt.Errorf("upgrading: %w", err)
	}
	c.ws = socket
	c.touch(g.cfg.IdleTimeout)
	if req.claims != nil {
		g.startExpiry(c, *req.claims)
	}
	member.Attach(c)
	go socket.ReadLoop()
	return nil
}

// readBufferSize is each connection's read buffer, kept for the connection's life: a
// chat message's frame (a few hundred bytes) fits in one read, a larger one costs one
// more read system call. 512 instead of 1024 took 0.3-0.4 KiB off each idle connection's
// RSS (the live heap, and the garbage collector's headroom on top of it).
const readBufferSize = 512

// SubprotocolBatch is the subprotocol of clients that take several messages in one text
// frame, one JSON object per line ('\n' between them): whatever is queued for the
// connection when it is written goes out together, so no wait is added. Clients that do
// not offer it get one message per frame. It is selected whenever offered (before
// SubprotocolV1; a bearer.<token> entry may be offered next to it).
const SubprotocolBatch = "roomcast.batch.v1"

func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header.Get("Connection"), "upgrade") &&
		r.Header.Get("Sec-WebSocket-Key") != "" &&
		r.Header.Get("Sec-WebSocket-Version") == "13"
}

func headerHasToken(v, token string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

func writeJSONError(w http.ResponseWriter, status int, msg, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "detail": detail})
}
