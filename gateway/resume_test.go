package gateway

import (
	"encoding/binary"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/native"
	"github.com/calmline/calmline/lib/tenant"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// frames sends n 20 ms stereo μ-law frames of the call's timeline from
// sample from on; each frame carries its position, so that a duplicate or
// a hole would show in the bytes fullcall received.
func (c *call) frames(t *testing.T, from, n int) {
	t.Helper()
	for i := range n {
		f := make([]byte, 320)
		binary.LittleEndian.PutUint32(f, uint32(from+160*i))
		if err := c.ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
			t.Fatal(err)
		}
	}
}

// drop breaks the connection without a close frame, as a network does.
func (c *call) drop() { c.ws.NetConn().Close() }

// A call whose connection breaks is resumed within the grace: one call,
// one realtime stream, one report holding every sample once.
func TestACallResumesAfterItsConnectionDropped(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 1, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Session.ResumeGrace = time.Minute
	})
	c := f.start(t, key, "r1", "agent-1")
	c.frames(t, 0, 50) // 1 s
	c.drop()
	waitFor(t, "the dropped call to be parked", func() bool {
		return f.mt.Value("calmline.gateway.calls.parked", "tenant", "acme") == 1
	})
	// The call holds the tenant's only slot meanwhile: a new call is
	// refused, a resume is not.
	if m := f.tryStartMsg(t, key, map[string]any{"call_id": "other"}); m["close"] != native.CloseOverQuota && m["status"] != http.StatusTooManyRequests {
		t.Errorf("a new call while the parked one holds the quota: %v; want 4429 or 429", m)
	}
	// The client resumes from half a second back: what the gateway has
	// is skipped, nothing is counted twice.
	r, m := f.tryStart2(t, key, map[string]any{"call_id": "r1", "agent_id": "agent-1", "resume": true, "resume_at_sample": 4000})
	if m["type"] != "started" {
		t.Fatalf("resume: %v", m)
	}
	if at, _ := m["resumed_at_sample"].(float64); at < 4000 || at > 8000 {
		t.Errorf("resumed_at_sample %v; want where the gateway's timeline ended (≤ 8000)", m["resumed_at_sample"])
	}
	r.frames(t, 4000, 100) // 4000 .. 20000
	stopped, code := r.stop(t)
	if code != websocket.CloseNormalClosure {
		t.Fatalf("stop: close %d, %v", code, stopped)
	}
	rep := f.fc.Report("r1")
	if rep == nil || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP || rep.AudioBytes != 20000*2 || rep.Incomplete {
		t.Fatalf("report %v; want a hang-up holding 40000 bytes", rep)
	}
	if gaps := f.fc.CallGaps("r1"); len(gaps) != 0 {
		t.Errorf("gaps %v; want none", gaps)
	}
	seqs := f.fc.Seqs("r1")
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("chunk sequence %v: not 1..n once each", seqs)
		}
	}
	opens := 0
	for _, o := range f.rt.OpenCalls() {
		if o.GetCall().GetCallId() == "r1" {
			opens++
		}
	}
	if opens != 1 {
		t.Errorf("realtime streams opened for the call: %d; want 1", opens)
	}
	if v := f.mt.Value("calmline.gateway.calls", "tenant", "acme", "protocol", "native"); v != 1 {
		t.Errorf("calls counted: %v; want 1", v)
	}
	if v := f.mt.Value("calmline.gateway.calls.resumed", "tenant", "acme"); v != 1 {
		t.Errorf("resumes counted: %v; want 1", v)
	}
}

// Nobody resumes: the call ends when the grace ends, as disconnected, and
// its id is free for a new call.
func TestADroppedCallEndsWhenTheGraceEnds(t *testing.T) {
	key := tenant.NewKey()
	const grace = 300 * time.Millisecond
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Session.ResumeGrace = grace
	})
	c := f.start(t, key, "r2", "")
	c.frames(t, 0, 10)
	c.drop()
	dropped := time.Now()
	waitFor(t, "the report", func() bool { return f.fc.Report("r2") != nil })
	if waited := time.Since(dropped); waited < grace {
		t.Errorf("report stored %v after the drop; want after the %v grace", waited, grace)
	}
	if rep := f.fc.Report("r2"); rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED || rep.AudioBytes != 3200 {
		t.Errorf("report %v; want disconnected with the 3200 bytes sent", rep)
	}
	// Once the call has ended, its id is free for a new call.
	waitFor(t, "the call to end", func() bool { return f.s.Sessions().LiveCalls("acme") == 0 })
	n := f.start(t, key, "r2", "")
	n.stop(t)
}

// An idle call ends at the idle timeout, not at the next ping after it,
// and is stored as an idle timeout.
func TestAnIdleCallEndsOnTimeAsIdle(t *testing.T) {
	key := tenant.NewKey()
	const idle = 300 * time.Millisecond
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Native.IdleTimeout = idle // pings stay every 10 s
	})
	c := f.start(t, key, "quiet", "")
	c.frames(t, 0, 5)
	last := time.Now()
	_, code := c.finish(t)
	closed := time.Since(last)
	if code != native.CloseIdle {
		t.Fatalf("closed with %d; want %d", code, native.CloseIdle)
	}
	if closed < idle || closed > 5*time.Second {
		t.Errorf("closed %v after the last audio; want the %v idle timeout, well before the next ping (10 s)", closed, idle)
	}
	waitFor(t, "the report", func() bool { return f.fc.Report("quiet") != nil })
	if rep := f.fc.Report("quiet"); rep.EndReason != fullcallv1.EndReason_END_REASON_IDLE_TIMEOUT {
		t.Errorf("end reason %v; want END_REASON_IDLE_TIMEOUT", rep.EndReason)
	}
}

// A draining gateway cannot be resumed on: a call waiting for its resume
// ends at once, as disconnected, with its report.
func TestADrainEndsParkedCallsAtOnce(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Session.ResumeGrace = time.Hour
		o.DrainTimeout = time.Hour
	})
	c := f.start(t, key, "r3", "")
	c.frames(t, 0, 10)
	c.drop()
	waitFor(t, "the dropped call to be parked", func() bool {
		return f.mt.Value("calmline.gateway.calls.parked", "tenant", "acme") == 1
	})
	f.s.StartDrain()
	waitFor(t, "the parked call's report", func() bool { return f.fc.Report("r3") != nil })
	if rep := f.fc.Report("r3"); rep.EndReason != fullcallv1.EndReason_END_REASON_DISCONNECTED || rep.AudioBytes != 3200 {
		t.Errorf("report %v; want disconnected with the 3200 bytes sent", rep)
	}
}

// A network that drops silently is noticed only when pongs stop: a resume
// that comes before that takes the call over from the old connection.
func TestAResumeTakesTheCallOverFromAConnectionThatLooksAlive(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Session.ResumeGrace = time.Minute
	})
	old := f.start(t, key, "r4", "")
	old.frames(t, 0, 50)
	// The client kept its audio: it resumes where the gateway's record
	// ends (resume_at_sample 0) and sends again from there.
	r, m := f.tryStart2(t, key, map[string]any{"call_id": "r4", "resume": true})
	if m["type"] != "started" {
		t.Fatalf("resume while the old connection is open: %v", m)
	}
	// The gateway dropped the old connection, without a close frame.
	if _, code := old.finish(t); code != websocket.CloseAbnormalClosure && code != 0 {
		t.Errorf("old connection closed with %d; want dropped (no close frame)", code)
	}
	at, _ := m["resumed_at_sample"].(float64)
	r.frames(t, int(at), 50)
	r.stop(t)
	rep := f.fc.Report("r4")
	if rep == nil || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP || rep.AudioBytes != uint64(at)*2+16000 {
		t.Fatalf("report %v; want a hang-up holding what the gateway had (%v samples) and the 16000 bytes after", rep, at)
	}
	if gaps := f.fc.CallGaps("r4"); len(gaps) != 0 {
		t.Errorf("gaps %v; want none (the client resent from resumed_at_sample)", gaps)
	}
}

// When fullcall fences a call's stream out (the client resumed it
// elsewhere), this gateway lets the call go: it does not reopen the stream
// and take the call back.
func TestACallResumedElsewhereIsLetGo(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 2, keys: []keyDef{{id: "a", key: key}}}), nil)
	var opens atomic.Int32
	f.fc.Configure(func() {
		f.fc.Refuse = func(o *fullcallv1.OpenCall) error {
			if o.Call.CallId == "moved" {
				opens.Add(1)
			}
			return nil
		}
		f.fc.OnChunk = func(callID string, _ *callv1.AudioChunk) error {
			if callID == "moved" {
				return status.Error(codes.Aborted, "call moved was resumed elsewhere")
			}
			return nil
		}
	})
	c := f.start(t, key, "moved", "")
	// One chunk's frames, no more: the gateway lets the call go on that
	// chunk and closes, and a frame written after its close would fail
	// (websocket: close sent), which is not what this test is about.
	c.frames(t, 0, 10)
	if _, code := c.finish(t); code != websocket.CloseInternalServerErr {
		t.Errorf("closed with %d; want 1011", code)
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("fullcall streams opened for the call: %d; want 1 (no reopen)", n)
	}
}

// A parked call is continued only by a resume of the same format: a plain
// start with its id gets 4410, a resume in another format 4400, and the
// call still waits for the right one.
func TestAParkedCallWaitsForAMatchingResume(t *testing.T) {
	key := tenant.NewKey()
	f := newFixture(t, tenantsYAML(tenantDef{id: "acme", max: 3, keys: []keyDef{{id: "a", key: key}}}), func(o *Options) {
		o.Session.ResumeGrace = time.Minute
	})
	c := f.start(t, key, "r5", "")
	c.frames(t, 0, 10)
	c.drop()
	waitFor(t, "the dropped call to be parked", func() bool {
		return f.mt.Value("calmline.gateway.calls.parked", "tenant", "acme") == 1
	})
	if _, m := f.tryStart2(t, key, map[string]any{"call_id": "r5"}); m["close"] != native.CloseCallLive {
		t.Errorf("a plain start for the waiting call: %v; want close %d", m, native.CloseCallLive)
	}
	if _, m := f.tryStart2(t, key, map[string]any{"call_id": "r5", "resume": true, "codec": "pcma"}); m["close"] != native.CloseBadMessage {
		t.Errorf("a resume in another codec: %v; want close %d", m, native.CloseBadMessage)
	}
	r, m := f.tryStart2(t, key, map[string]any{"call_id": "r5", "resume": true})
	if m["type"] != "started" || m["resumed_at_sample"] != float64(1600) {
		t.Fatalf("the matching resume: %v; want started at 1600", m)
	}
	r.stop(t)
	if rep := f.fc.Report("r5"); rep == nil || rep.AudioBytes != 3200 || rep.EndReason != fullcallv1.EndReason_END_REASON_HANGUP {
		t.Errorf("report %v; want the 3200 bytes, hung up", rep)
	}
}
