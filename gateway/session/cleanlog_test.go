package session

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/gatewaytest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// capture is a slog handler that keeps every record at WARN or above.
type capture struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newCapture() capture { return capture{mu: &sync.Mutex{}, recs: &[]slog.Record{}} }

func (c capture) Enabled(context.Context, slog.Level) bool { return true }
func (c capture) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		c.mu.Lock()
		*c.recs = append(*c.recs, r.Clone())
		c.mu.Unlock()
	}
	return nil
}
func (c capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c capture) WithGroup(string) slog.Handler      { return c }

// check fails the test for every WARN or ERROR logged.
func (c capture) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range *c.recs {
		var attrs []any
		r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
		t.Errorf("logged %s %q %v on a normal call", r.Level, r.Message, attrs)
	}
}

func cleared(callID string) *callv1.AlertEvent {
	return &callv1.AlertEvent{AlertId: "acme/" + callID + "/default/1", RuleId: "default", Episode: 1,
		State: callv1.AlertState_ALERT_STATE_CLEARED, Score: callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE, Value: 40, Threshold: 70, Second: 3}
}

// TestAlertClearedAtHangUpReachesTheReport hangs up a call whose alert
// clears in realtime's answer to the close: the cleared event is recorded
// before fullcall's close, and nothing is logged at WARN or above (it used
// to be sent on the stream already closed for sending: "SendMsg called
// after CloseSend", a reopen, and fullcall's store write cancelled).
func TestAlertClearedAtHangUpReachesTheReport(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	rt.Configure(func() { rt.CloseAlert = cleared })
	logs := newCapture()
	m := manager(t, rt.Addr, fc.Addr, Options{Logger: slog.New(logs)})
	c, err := m.Start(context.Background(), stereo("clears"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 3, nil)
	if _, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP); err != nil {
		t.Fatal(err)
	}
	var got bool
	for _, e := range fc.CallEvents("clears") {
		if a := e.GetAlert(); a != nil && a.State == callv1.AlertState_ALERT_STATE_CLEARED {
			got = true
		}
	}
	if !got {
		t.Error("the alert cleared at hang-up is not among the events fullcall recorded")
	}
	logs.check(t)
}

// TestEventAfterCloseIsNotSentOnAClosedStream makes realtime answer the
// close only after fullcall has the call's close (past the gateway's
// bounded wait): the late event is left out, the report is stored, and the
// log stays clean.
func TestEventAfterCloseIsNotSentOnAClosedStream(t *testing.T) {
	rt, fc := gatewaytest.StartRealtime(t), gatewaytest.StartFullcall(t)
	fcClosed := make(chan struct{})
	var once sync.Once
	fc.Configure(func() { fc.OnClose = func(string) { once.Do(func() { close(fcClosed) }) } })
	rt.Configure(func() {
		rt.CloseAlert = func(callID string) *callv1.AlertEvent {
			select {
			case <-fcClosed:
			case <-time.After(10 * time.Second): // a bound, not a synchronisation
				t.Error("fullcall never got the call's close")
			}
			return cleared(callID)
		}
	})
	logs := newCapture()
	m := manager(t, rt.Addr, fc.Addr, Options{Logger: slog.New(logs)})
	c, err := m.Start(context.Background(), stereo("late"), nil)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, c, 2, nil)
	r, err := c.End(context.Background(), fullcallv1.EndReason_END_REASON_HANGUP)
	if err != nil {
		t.Fatal(err)
	}
	if r == nil || r.Incomplete {
		t.Errorf("report %v; want a complete one", r)
	}
	logs.check(t)
}
