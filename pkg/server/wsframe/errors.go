package wsframe

import (
	"strconv"

	"roomcast/pkg/chat"
)

// Error returns the error frame {"type":"error","code":code,"error":reason}. It refuses
// one thing; the connection stays open.
func Error(code, reason string) []byte { return Text(chat.ErrorJSON(code, reason)) }

// Truncated tells the members of a room that messages may have been lost: the room's
// catch-up after a broker outage could not read everything it missed from history.
var Truncated = Error(chat.CodeHistoryTruncated, "messages sent during a broker outage may be missing")

// ReplayTruncated precedes a resuming client's replay when messages after since may no
// longer be in history.
func ReplayTruncated(since uint64) []byte {
	return Error(chat.CodeHistoryTruncated,
		"messages after seq "+strconv.FormatUint(since, 10)+" may have been dropped from history; replaying everything kept")
}

// ReplayFailed tells a resuming client that its replay could not be read (err says why)
// and that the connection continues with live messages.
func ReplayFailed(err error) []byte {
	return Error(chat.CodeHistoryUnavailable, "history could not be replayed; continuing live: "+err.Error())
}

// RateLimited answers a message dropped for exceeding the rate, saying what the rate is.
func RateLimited(perSecond float64, burst int) []byte {
	return Error(chat.CodeRateLimited, "too many messages: "+
		strconv.FormatFloat(perSecond, 'g', -1, 64)+"/s allowed, burst "+strconv.Itoa(burst))
}

// Unavailable answers a message that could not be handed to the broker.
var Unavailable = Error(chat.CodeUnavailable, "message not sent: the server has no broker connection, try again")

// ReadOnly answers a message sent with a token that may only read.
var ReadOnly = Error(chat.CodeForbidden, "message not sent: this token may read the room but not write to it")

// NoTokens answers a token refresh on a server that does not use tokens.
var NoTokens = Error(chat.CodeBadRequest, "this server does not use tokens")

// RefreshRefused answers a token refresh whose new token err refused.
func RefreshRefused(err error) []byte {
	return Error(chat.CodeForbidden, "refresh refused: "+err.Error())
}
