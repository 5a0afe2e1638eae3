package fullcall

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// callbackSecret is acme's Standard Webhooks secret in these tests.
var callbackSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("a test secret of 32 bytes length"))

// verifyStandardWebhook checks a delivery the way a receiver following the
// Standard Webhooks specification does, written here independently of the
// code under test: the signed content is "id.timestamp.body", the key is the
// base64 after "whsec_", and the header holds space-separated "v1,<base64>"
// signatures of which one must match.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing headers: id %q timestamp %q signature %q", id, ts, sigs)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q: %v", ts, err)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %s too far from now", ts)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "." + string(body)))
	want := m.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no signature matches")
}

// delivery is one request a callback receiver got.
type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a real HTTP server on loopback answering callbacks with the
// given statuses in turn (then 200).
func receiver(t *testing.T, statuses ...int) (*httptest.Server, chan delivery) {
	got := make(chan delivery, 16)
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- delivery{header: r.Header.Clone(), body: b, at: time.Now()}
		code := http.StatusOK
		if n < len(statuses) {
			code = statuses[n]
		}
		n++
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

// callbackFixture runs fullcall with acme's callbacks allowed under url.
func callbackFixture(t *testing.T, url string) *fixture {
	t.Setenv("ACME_CALLBACK_SECRET", callbackSecret)
	tt := newTenants(t, func(tn *tenant.Tenant) {
		if tn.ID == "acme" {
			tn.JobCallbacks = tenant.JobCallbacks{URLs: []string{url + "/hooks/"}, SigningSecrets: []tenant.SecretRef{{Env: "ACME_CALLBACK_SECRET"}}}
		}
	})
	return startWith(t, tt, "sqlite:"+t.TempDir()+"/fc.db", func(o *Options) {
		o.CallbackRetry = 50 * time.Millisecond
		o.CallbackAttempts = 3
	})
}

func (f *fixture) post(t *testing.T, path, key string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (f *fixture) get(t *testing.T, path, key string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type jobJSON struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	CallID    string `json:"call_id"`
	Error     string `json:"error"`
	ErrorCode string `json:"error_code"`
	Callback  string `json:"callback"`
	Source    string `json:"source"`
	Report    *struct {
		CallID    string  `json:"call_id"`
		DurationS float64 `json:"duration_s"`
	} `json:"report"`
}

// waitJob polls the job's status URL until it leaves the queue.
func (f *fixture) waitJob(t *testing.T, url, key string, done func(jobJSON) bool) jobJSON {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		code, b := f.get(t, url, key)
		var j jobJSON
		if code != 200 || json.Unmarshal(b, &j) != nil {
			t.Fatalf("GET %s = %d %s", url, code, b)
		}
		if done(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job still %+v after 15 s", j)
		}
		<-tick.C
	}
}

func TestLargeUploadBecomesAJobWithASignedCallback(t *testing.T) {
	srv, deliveries := receiver(t, http.StatusServiceUnavailable)
	f := callbackFixture(t, srv.URL)
	// 70 s of stereo μ-law is over the 1 MiB synchronous limit.
	wav := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, turns(70))
	code, hdr, body := f.post(t, "/api/v1/recordings?call_id=big-1&agent_id=ana&callback_url="+srv.URL+"/hooks/jobs", f.keys["acme"], wav)
	if code != http.StatusAccepted {
		t.Fatalf("POST = %d %s; want 202", code, body)
	}
	var sub struct {
		Job       jobJSON `json:"job"`
		StatusURL string  `json:"status_url"`
	}
	json.Unmarshal(body, &sub)
	if sub.Job.ID == "" || sub.StatusURL != "/api/v1/jobs/"+sub.Job.ID || hdr.Get("Location") != sub.StatusURL || sub.Job.State != "JOB_STATE_QUEUED" {
		t.Fatalf("202 body %s, Location %q", body, hdr.Get("Location"))
	}
	// Another tenant cannot see the job.
	if code, _ := f.get(t, sub.StatusURL, f.keys["globex"]); code != 404 {
		t.Errorf("globex reading acme's job: %d; want 404", code)
	}
	j := f.waitJob(t, sub.StatusURL, f.keys["acme"], func(j jobJSON) bool { return j.Callback == "CALLBACK_STATE_DELIVERED" })
	if j.State != "JOB_STATE_DONE" || j.CallID != "big-1" || j.Report == nil || j.Report.DurationS != 70 || j.Source != "upload" {
		t.Errorf("finished job %+v", j)
	}
	// The receiver refused the first attempt (503) and took the second;
	// both carry the same id and a valid signature.
	var ds []delivery
	for len(ds) < 2 {
		select {
		case d := <-deliveries:
			ds = append(ds, d)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d deliveries; want 2", len(ds))
		}
	}
	for i, d := range ds {
		if err := verifyStandardWebhook(callbackSecret, d.header, d.body, time.Now()); err != nil {
			t.Errorf("delivery %d: %v", i+1, err)
		}
		if d.header.Get("webhook-id") != ds[0].header.Get("webhook-id") {
			t.Errorf("delivery %d has another webhook-id", i+1)
		}
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Job       jobJSON `json:"job"`
			StatusURL string  `json:"status_url"`
			ReportURL string  `json:"report_url"`
		} `json:"data"`
	}
	if err := json.Unmarshal(ds[1].body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "fullcall.job.done" || ev.Data.Job.ID != sub.Job.ID || ev.Data.ReportURL != "/api/v1/reports/big-1" || ev.Data.Job.Report != nil {
		t.Errorf("callback body %s", ds[1].body)
	}
	// A tampered body fails the independent check.
	if err := verifyStandardWebhook(callbackSecret, ds[1].header, append(ds[1].body, ' '), time.Now()); err == nil {
		t.Error("the signature check accepted a tampered body")
	}
	if code, _ := f.get(t, ev.Data.ReportURL, f.keys["acme"]); code != 200 {
		t.Errorf("report_url: %d", code)
	}
}

func TestFailedJobsAndRefusedCallbacks(t *testing.T) {
	srv, deliveries := receiver(t, http.StatusGone)
	f := callbackFixture(t, srv.URL)
	silent := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, bytes.Repeat([]byte{0xff}, 8000))
	code, _, body := f.post(t, "/api/v1/recordings?async=true&callback_url="+srv.URL+"/hooks/x", f.keys["acme"], silent)
	if code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", code, body)
	}
	var sub struct {
		StatusURL string `json:"status_url"`
	}
	json.Unmarshal(body, &sub)
	j := f.waitJob(t, sub.StatusURL, f.keys["acme"], func(j jobJSON) bool { return j.Callback == "CALLBACK_STATE_FAILED" })
	if j.State != "JOB_STATE_FAILED" || j.ErrorCode != "no_speech" || j.Error == "" {
		t.Errorf("job of a silent recording: %+v; want failed with no_speech", j)
	}
	d := <-deliveries
	var ev struct{ Type string }
	json.Unmarshal(d.body, &ev)
	if ev.Type != "fullcall.job.failed" {
		t.Errorf("event type %q", ev.Type)
	}
	// 410 is final: no second attempt.
	select {
	case <-deliveries:
		t.Error("a refused callback was retried")
	default:
	}
	// Callback URLs outside the tenant's prefixes are refused up front.
	for _, u := range []string{srv.URL + "/elsewhere", "https://attacker.example/hooks/", "not a url"} {
		if code, _, body := f.post(t, "/api/v1/recordings?async=true&callback_url="+url.QueryEscape(u), f.keys["acme"], silent); code != 400 || !strings.Contains(string(body), "bad_callback_url") {
			t.Errorf("callback_url %q: %d %s; want 400 bad_callback_url", u, code, body)
		}
	}
}

func TestSubmitRecordingOverGRPC(t *testing.T) {
	f := start(t)
	rc := fullcallv1.NewRecordingServiceClient(f.cc)
	wav := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, turns(4))
	resp, err := rc.SubmitRecording(f.key("acme"), &fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{Wav: wav, CallId: "g1"}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := rc.GetJob(f.key("acme"), &fullcallv1.GetJobRequest{JobId: resp.Job.Id})
		if err != nil {
			t.Fatal(err)
		}
		if got.Job.State == fullcallv1.JobState_JOB_STATE_DONE {
			if got.Job.Report.GetCallId() != "g1" || got.Job.Report.DurationS != 4 {
				t.Errorf("job report %v", got.Job.Report)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %v not done", got.Job)
		}
		time.Sleep(20 * time.Millisecond) // polling, as a client does
	}
	if _, err := rc.GetJob(f.key("globex"), &fullcallv1.GetJobRequest{JobId: resp.Job.Id}); status.Code(err) != codes.NotFound {
		t.Errorf("another tenant's job: %v; want NotFound", err)
	}
	for _, c := range []struct {
		name string
		req  *fullcallv1.SubmitRecordingRequest
		want codes.Code
	}{
		{"not a wav", &fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{Wav: []byte("hello")}}, codes.InvalidArgument},
		{"too large", &fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{Wav: make([]byte, 4<<20+1)}}, codes.ResourceExhausted},
		{"callback not configured", &fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{Wav: wav}, CallbackUrl: "https://x.example/"}, codes.InvalidArgument},
	} {
		if _, err := rc.SubmitRecording(f.key("acme"), c.req); status.Code(err) != c.want {
			t.Errorf("%s: %v; want %v", c.name, err, c.want)
		}
	}
	if _, err := rc.AnalyzeRecording(f.key("acme"), &fullcallv1.AnalyzeRecordingRequest{Recording: &fullcallv1.Recording{Wav: make([]byte, 2<<20)}}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("synchronous analysis over the limit: %v; want ResourceExhausted", err)
	}
}

func TestFullJobQueueRefusesAndSpoolWaits(t *testing.T) {
	spool := t.TempDir()
	f := start(t, func(o *Options) {
		o.Workers = 0 // nothing takes jobs off the queue
		o.MaxPendingJobs = 1
		o.SpoolDir, o.SpoolSettle, o.SpoolScanEvery = spool, 0, time.Hour
	})
	wav := stereoWAV(2)
	if code, _, body := f.post(t, "/api/v1/recordings?async=true", f.keys["acme"], wav); code != http.StatusAccepted {
		t.Fatalf("first job: %d %s", code, body)
	}
	code, _, body := f.post(t, "/api/v1/recordings?async=true", f.keys["acme"], wav)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "queue_full") {
		t.Errorf("job over the tenant's bound: %d %s; want 429 queue_full", code, body)
	}
	// Another tenant has its own queue.
	if code, _, body := f.post(t, "/api/v1/recordings?async=true", f.keys["globex"], wav); code != http.StatusAccepted {
		t.Errorf("globex's first job: %d %s", code, body)
	}
	// globex's spool files: one fits, the other waits in incoming/.
	drop(t, spool, "globex", "a.wav", wav)
	drop(t, spool, "globex", "b.wav", wav)
	ctx := context.Background()
	sp := f.s.sources["spool"].(*spoolDir)
	for range 2 {
		if _, err := sp.scan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	states, _, _ := f.s.store.JobStats(ctx, "spool")
	if states[fullcallv1.JobState_JOB_STATE_QUEUED] != 0 {
		t.Errorf("spool jobs %v; want none: globex's queue is full with its upload", states)
	}
	if got := ls(t, filepath.Join(spool, "globex", "incoming")); len(got) != 2 {
		t.Errorf("incoming holds %v; want both files waiting", got)
	}
}

// A job carries its call id from the moment it is queued — the client's, or
// one calmline chooses — and its report has the same id.
func TestJobShowsItsCallIDFromTheStart(t *testing.T) {
	f := start(t)
	wav := audio.EncodeWAV(audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, turns(4))
	for _, tc := range []struct{ query, want string }{
		{"?async=true&call_id=mine-7", "mine-7"},
		{"?async=true", ""}, // chosen by calmline
	} {
		code, _, body := f.post(t, "/api/v1/recordings"+tc.query, f.keys["acme"], wav)
		if code != http.StatusAccepted {
			t.Fatalf("POST %s = %d %s", tc.query, code, body)
		}
		var sub struct {
			Job       jobJSON `json:"job"`
			StatusURL string  `json:"status_url"`
		}
		json.Unmarshal(body, &sub)
		got := sub.Job.CallID
		if tc.want != "" && got != tc.want || tc.want == "" && !strings.HasPrefix(got, "rec-") {
			t.Fatalf("queued job %s: call_id %q; want %q (or rec-… when none was given)", tc.query, got, tc.want)
		}
		// The status URL shows it while the job waits, and the finished
		// job and its report keep it.
		j := f.waitJob(t, sub.StatusURL, f.keys["acme"], func(j jobJSON) bool {
			if j.CallID != got {
				t.Fatalf("job %s shows call_id %q in state %s; want %q throughout", j.ID, j.CallID, j.State, got)
			}
			return j.State == "JOB_STATE_DONE" || j.State == "JOB_STATE_FAILED"
		})
		if j.State != "JOB_STATE_DONE" || j.Report == nil || j.Report.CallID != got {
			t.Errorf("finished job %+v; want done with report for %q", j, got)
		}
	}
}
