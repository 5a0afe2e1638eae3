package fullcall

import (
	"net/http"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

// TestRecordingsAreTheRootsOfTheirTraces: an upload analysed at once, an
// upload that becomes a job with a callback, and a spool file are each
// the root of one trace naming the call: "recording" or "spool file", with
// the analysis and the report's write under it (a job's under its "job"
// span, which continues the context stored with the job), and the
// callback under the upload's root. On SQLite and PostgreSQL (the job
// store keeps the context).
func TestRecordingsAreTheRootsOfTheirTraces(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, dsn string) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(telemetry.CallIDSpans()), sdktrace.WithSpanProcessor(rec))
		srv, _ := receiver(t, http.StatusOK)
		t.Setenv("ACME_CALLBACK_SECRET", callbackSecret)
		tt := newTenants(t, func(tn *tenant.Tenant) {
			if tn.ID == "acme" {
				tn.JobCallbacks = tenant.JobCallbacks{URLs: []string{srv.URL + "/hooks/"}, SigningSecrets: []tenant.SecretRef{{Env: "ACME_CALLBACK_SECRET"}}}
			}
		})
		spool := t.TempDir()
		f := startWith(t, tt, dsn, spoolOpts(spool), func(o *Options) { o.TracerProvider = tp })

		if code, _, body := f.post(t, "/api/v1/recordings?call_id=now-1", f.keys["acme"], stereoWAV(3)); code != http.StatusOK {
			t.Fatalf("synchronous upload: %d %s", code, body)
		}
		code, hdr, body := f.post(t, "/api/v1/recordings?call_id=job-1&async=true&callback_url="+srv.URL+"/hooks/jobs", f.keys["acme"], stereoWAV(3))
		if code != http.StatusAccepted {
			t.Fatalf("asynchronous upload: %d %s", code, body)
		}
		f.waitJob(t, hdr.Get("Location"), f.keys["acme"], func(j jobJSON) bool { return j.Callback == "CALLBACK_STATE_DELIVERED" })
		// The gRPC equivalents.
		rc := fullcallv1.NewRecordingServiceClient(f.cc)
		if _, err := rc.AnalyzeRecording(f.key("acme"), &fullcallv1.AnalyzeRecordingRequest{Recording: &fullcallv1.Recording{Wav: stereoWAV(3), CallId: "grpc-now-1"}}); err != nil {
			t.Fatalf("AnalyzeRecording: %v", err)
		}
		sub, err := rc.SubmitRecording(f.key("acme"), &fullcallv1.SubmitRecordingRequest{Recording: &fullcallv1.Recording{Wav: stereoWAV(3), CallId: "grpc-job-1"}})
		if err != nil {
			t.Fatalf("SubmitRecording: %v", err)
		}
		f.waitJob(t, "/api/v1/jobs/"+sub.Job.Id, f.keys["acme"], func(j jobJSON) bool { return j.State == "JOB_STATE_DONE" })
		drop(t, spool, "acme", "spooled-1.wav", stereoWAV(3))
		waitFiles(t, filepath.Join(spool, "acme", "done"), "spooled-1.wav")
		f.stop(t) // every span has ended
		spans := rec.Ended()

		byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
		for _, s := range spans {
			byID[s.SpanContext().SpanID()] = s
		}
		find := func(name, callID string) sdktrace.ReadOnlySpan {
			t.Helper()
			for _, s := range spans {
				if s.Name() == name && attr(s, telemetry.CallIDKey) == callID {
					return s
				}
			}
			var got []string
			for _, s := range spans {
				got = append(got, s.Name()+" "+attr(s, telemetry.CallIDKey))
			}
			t.Fatalf("no span %q for %s; spans: %q", name, callID, got)
			return nil
		}
		under := func(child sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan) {
			t.Helper()
			if child.SpanContext().TraceID() != parent.SpanContext().TraceID() || child.Parent().SpanID() != parent.SpanContext().SpanID() {
				p := byID[child.Parent().SpanID()]
				name := "nothing"
				if p != nil {
					name = p.Name()
				}
				t.Errorf("%q is under %s; want under %q of the same trace", child.Name(), name, parent.Name())
			}
		}
		root := func(s sdktrace.ReadOnlySpan) {
			t.Helper()
			if s.Parent().IsValid() {
				t.Errorf("%q for %s has a parent; want a trace's root", s.Name(), attr(s, telemetry.CallIDKey))
			}
		}

		now := find(spanRecording, "now-1")
		root(now)
		under(find(spanAnalysis, "now-1"), now)
		under(find(spanWrite, "now-1"), now)

		up := find(spanRecording, "job-1")
		root(up)
		job := find(spanJob, "job-1")
		under(job, up)
		under(find(spanAnalysis, "job-1"), job)
		under(find(spanWrite, "job-1"), job)
		cb := find(spanCallback, "job-1")
		under(cb, up)
		if got := attr(cb, "calmline.callback.outcome"); got != "delivered" {
			t.Errorf("callback span outcome %q; want delivered", got)
		}

		for _, id := range []string{"grpc-now-1", "grpc-job-1"} {
			r := find(spanRecording, id)
			root(r)
			if len(r.Links()) != 1 {
				t.Errorf("%s: the recording span links %d spans; want the gRPC request's", id, len(r.Links()))
			}
			parent := r
			if id == "grpc-job-1" {
				parent = find(spanJob, id)
				under(parent, r)
			}
			under(find(spanAnalysis, id), parent)
			under(find(spanWrite, id), parent)
		}

		file := find(spanSpoolFile, "spooled-1")
		root(file)
		sjob := find(spanJob, "spooled-1")
		under(sjob, file)
		under(find(spanAnalysis, "spooled-1"), sjob)
		under(find(spanWrite, "spooled-1"), sjob)
	})
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if kv.Key == attribute.Key(key) {
			return kv.Value.String()
		}
	}
	return ""
}
