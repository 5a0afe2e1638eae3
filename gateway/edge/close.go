package edge

import (
	"errors"
	"fmt"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/gateway/wsconn"
)

// Close codes, declared once for every protocol: the standard ones the
// gateway uses and calmline's own (4400–4499, mirroring HTTP statuses).
// docs/protocol-native.md and docs/protocols.md document them.
const (
	CloseNormal        = websocket.CloseNormalClosure           // 1000: after stop
	CloseGoingAway     = websocket.CloseGoingAway               // 1001: the gateway drains
	CloseInvalidText   = websocket.CloseInvalidFramePayloadData // 1007: text that is not UTF-8
	ClosePolicy        = websocket.ClosePolicyViolation         // 1008: AudioHook's close after an error disconnect
	CloseTooBig        = websocket.CloseMessageTooBig           // 1009: a message over the read limit
	CloseInternal      = websocket.CloseInternalServerErr       // 1011: the gateway lost the call
	CloseTryAgainLater = websocket.CloseTryAgainLater           // 1013: backends unavailable

	// CloseBadMessage: malformed JSON, an unknown message type, a missing
	// or invalid field, a frame that is not whole sample frames.
	CloseBadMessage = 4400
	// CloseUnauthenticated: no or unknown API key, for protocols that
	// authenticate after the upgrade (a Twilio-style start's parameters).
	CloseUnauthenticated = 4401
	// CloseForbidden: a feed-only key (role care or agent).
	CloseForbidden = 4403
	// CloseIdle: no start, or no audio, for the idle timeout.
	CloseIdle = 4408
	// CloseOutOfOrder: audio before start, start twice, stop before start,
	// sequence numbers out of order.
	CloseOutOfOrder = 4409
	// CloseCallLive: a call with this call id is already live.
	CloseCallLive = 4410
	// CloseNotResumable: no such call to resume, or its report is stored.
	CloseNotResumable = 4411
	// CloseUnsupportedMedia: unsupported codec, sample rate or channels.
	CloseUnsupportedMedia = 4415
	// CloseTooFast: audio faster than real time, past the pacing policy.
	CloseTooFast = 4420
	// CloseOverQuota: the tenant is at its concurrent-call limit.
	CloseOverQuota = 4429
)

// Error is why a connection closes: its close code, the reason sent with
// it, and the reason the refusal is counted under.
type Error struct {
	Code   int
	Reason string
	// Count is the refusal metric's reason; "" counts it as close_CODE.
	Count string
	// Refused marks a call the call core refused at start (quota, a live
	// call id, the drain, unavailable backends): counted there, and
	// logged as a refusal rather than as bad input.
	Refused bool
	// Err is the error mapped, if any (errors.Is sees through).
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("close %d: %s", e.Code, e.Reason) }

// Unwrap returns the error mapped.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an Error with the code and a formatted reason.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// closeTable is the one map from the call core's errors to close codes.
// A reason of "" sends the error's own text.
var closeTable = []struct {
	err     error
	code    int
	reason  string
	refused bool
}{
	{session.ErrTooFast, CloseTooFast, "", false},
	{session.ErrBadStart, CloseBadMessage, "", false},
	{session.ErrOverQuota, CloseOverQuota, "", true},
	{session.ErrDraining, CloseGoingAway, "gateway draining; reconnect", true},
	{session.ErrCallLive, CloseCallLive, "", true},
	{session.ErrNotResumable, CloseNotResumable, "", true},
	{session.ErrUnavailable, CloseTryAgainLater, "analysis backends unavailable; try again", true},
}

// ErrorOf maps err to the Error a connection closes with: an *Error as it
// is, the call core's errors and wsconn's read errors by the one table,
// anything else as 1013 (the backends failed the call's start).
func ErrorOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if code, ok := wsconn.ClientError(err); ok {
		return &Error{Code: code, Reason: err.Error(), Err: err}
	}
	for _, row := range closeTable {
		if errors.Is(err, row.err) {
			reason := row.reason
			if reason == "" {
				reason = err.Error()
			}
			return &Error{Code: row.code, Reason: reason, Refused: row.refused, Err: err}
		}
	}
	return &Error{Code: CloseTryAgainLater, Reason: "analysis backends unavailable; try again", Refused: true, Err: err}
}
