package wsgateway

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsframe"
)

// SubprotocolV1 is the subprotocol a browser may offer next to its bearer.<token> entry;
// the server selects it when offered, since browsers fail a handshake that selects none.
const SubprotocolV1 = "roomcast.v1"

const bearerProtocolPrefix = "bearer."

// tokenFrom finds the client's token: ?token=, then Authorization: Bearer, then a
// Sec-WebSocket-Protocol entry bearer.<token> (browsers cannot set headers). It also
// returns the subprotocols offered.
func tokenFrom(r *http.Request) (token string, offered []string) {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				offered = append(offered, p)
			}
		}
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t, offered
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), offered
	}
	for _, p := range offered {
		if t, ok := strings.CutPrefix(p, bearerProtocolPrefix); ok {
			return t, offered
		}
	}
	return "", offered
}

// authorize checks the token of r for room. claims is nil when auth is off.
func (g *Gateway) authorize(r *http.Request, room string) (*auth.Claims, []string, error) {
	token, offered := tokenFrom(r)
	if g.cfg.Auth == nil {
		return nil, offered, nil
	}
	c, err := g.cfg.Auth.Verify(token)
	if err != nil {
		return nil, offered, err
	}
	if !c.Allows(room) {
		return nil, offered, &auth.Error{Reason: auth.ReasonRoom, Err: roomRefused(c)}
	}
	return &c, offered, nil
}

// authenticate checks the token for req's room and fills in req's claims and offered
// subprotocols.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, req *upgradeRequest) bool {
	claims, offered, err := g.authorize(r, req.room)
	if err != nil {
		var ae *auth.Error
		reason := auth.ReasonMalformed
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		g.authFails.WithLabelValues(string(reason)).Inc()
		if reason == auth.ReasonRoom {
			writeJSONError(w, http.StatusForbidden, "forbidden", err.Error())
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roomcast"`)
			writeJSONError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		}
		return false
	}
	req.claims, req.offered = claims, offered
	return true
}

var (
	errRoomNotAllowed = authError("the token's rooms claim does not include this room")
	errNoRoomsClaim   = authError(`the token has no rooms claim, which admits no room (["*"] admits every room)`)
)

// roomRefused says why a valid token does not admit the room.
func roomRefused(c auth.Claims) error {
	if c.Rooms == nil {
		return errNoRoomsClaim
	}
	return errRoomNotAllowed
}

type authError string

func (e authError) Error() string { return string(e) }

// closeTokenExpired is the close code for a connection whose token ran out.
const closeTokenExpired = wsframe.ClosePolicyViolation

// startExpiry arms the close at the token's expiry; a token refresh moves the expiry,
// and the timer re-arms itself for it.
func (g *Gateway) startExpiry(c *wsConn, claims auth.Claims) {
	c.readOnly.Store(claims.ReadOnly)
	c.expires.Store(claims.Expires.UnixNano())
	var fire func()
	fire = func() {
		if left := time.Until(time.Unix(0, c.expires.Load())); left > 0 {
			c.expiry.Reset(left)
			return
		}
		g.authFails.WithLabelValues(string(auth.ReasonExpired)).Inc()
		c.member.Close(closeTokenExpired, "token expired")
	}
	// Armed in two steps so that fire never runs before c.expiry is set.
	c.expiry = time.AfterFunc(time.Hour, fire)
	c.expiry.Reset(time.Until(claims.Expires))
}

// refreshToken takes a new token for the connection (a refresh frame): valid, for its
// room, expiring later.
func (g *Gateway) refreshToken(c *wsConn, token string) {
	if g.cfg.Auth == nil {
		c.member.Send(wsframe.NoTokens)
		g.errs.Count(chat.KindBadRequest)
		return
	}
	claims, err := g.cfg.Auth.Verify(token)
	if err == nil && !claims.Allows(c.member.Room()) {
		err = roomRefused(claims)
	}
	if err == nil && claims.Expires.UnixNano() <= c.expires.Load() {
		err = authError("the new token does not expire later than the current one")
	}
	if err != nil {
		g.errs.Count(chat.KindForbidden)
		c.member.Send(wsframe.RefreshRefused(err))
		return
	}
	c.readOnly.Store(claims.ReadOnly)
	c.expires.Store(claims.Expires.UnixNano())
}
