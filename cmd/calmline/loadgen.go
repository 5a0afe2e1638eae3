package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/calmline/calmline/cmd/loadgen"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tenant"
)

func init() {
	commands["loadgen"] = command{
		summary: "simulate PBXs: N concurrent calls from a WAV file at real-time pace, with a JSON summary",
		run:     runLoadgen,
	}
}

func runLoadgen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("calmline loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadgen.Options
	fs.StringVar(&o.URL, "url", "", "the gateway's endpoint for the protocol (default ws://127.0.0.1:8080/ws/PROTOCOL)")
	fs.StringVar(&o.Protocol, "protocol", "native", "ingest protocol: "+strings.Join(loadgen.Protocols(), ", "))
	apiKey := fs.String("api-key", "", "the tenant's API key (default $CALMLINE_API_KEY)")
	apiKeyFile := fs.String("api-key-file", "", "file holding the API key")
	secretFile := fs.String("client-secret-file", "", "AudioHook: file holding the API key's client secret, base64 as Genesys Cloud shows it (default $CALMLINE_CLIENT_SECRET); without, requests go unsigned")
	fs.IntVar(&o.Calls, "calls", 10, "concurrent calls")
	fs.Float64Var(&o.Ramp, "ramp", 50, "calls started per second (0: all at once)")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "how long each call streams (with --burst-hangup: after the last call started)")
	wav := fs.String("wav", "", "WAV file every call plays, looped or trimmed to --duration (PCM16, μ-law or A-law; 8 or 16 kHz; mono or stereo); default a synthetic stereo μ-law conversation")
	codec := fs.String("codec", "", "send the audio in this codec (pcmu, pcma, l16) instead of the file's")
	roles := fs.String("roles", "", "channel roles in order (default caller,agent for stereo, agent for mono)")
	fs.BoolVar(&o.BurstHangup, "burst-hangup", false, "hang every call up in the same second")
	sources := fs.String("source-addrs", "", "local addresses to dial from, in turn: a list (127.0.0.2,127.0.0.3) or a range (127.0.0.2-127.0.0.9)")
	verify := fs.String("verify-reports", "", "fullcall's HTTP address (http://host:port): check every completed call's stored report holds all it sent")
	fs.StringVar(&o.CallPrefix, "call-prefix", "", "call id prefix (default lg-RUNID-)")
	fs.DurationVar(&o.StopTimeout, "stop-timeout", 30*time.Second, "how long to wait for a call's report after its hang-up")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	caFile := fs.String("ca-file", "", "PEM file of the CA certificate(s) to trust for wss:// and https:// (a self-signed edge), instead of the system's")
	fs.BoolVar(&o.Reconnect, "reconnect", false, "resume a call whose connection is lost (a gateway died) as the same call, through the same URL (native protocol)")
	fs.DurationVar(&o.ReconnectWindow, "reconnect-window", 30*time.Second, "with --reconnect: how long a call keeps trying to resume")
	fs.IntVar(&o.FramesPerWrite, "frames-per-write", 1, "send each call's 20 ms frames in groups of this many, each group in one write when its first frame is due (native: fewer system calls, audio up to (N-1)×20 ms early)")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the simulator to this file until it ends (for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "calmline loadgen:", err)
		return 2
	}
	o.APIKey = *apiKey
	if *apiKeyFile != "" {
		b, err := os.ReadFile(*apiKeyFile)
		if err != nil {
			return fail(err)
		}
		o.APIKey = strings.TrimSpace(string(b))
	}
	if o.APIKey == "" {
		o.APIKey = os.Getenv("CALMLINE_API_KEY")
	}
	if o.APIKey == "" {
		return fail(fmt.Errorf("no API key: give --api-key, --api-key-file or $CALMLINE_API_KEY"))
	}
	if o.URL == "" {
		o.URL = "ws://127.0.0.1:8080/ws/" + o.Protocol
	}
	secret := os.Getenv("CALMLINE_CLIENT_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fail(err)
		}
		secret = string(b)
	}
	if strings.TrimSpace(secret) != "" {
		s, err := tenant.DecodeClientSecret(secret)
		if err != nil {
			return fail(fmt.Errorf("client secret: %w", err))
		}
		o.ClientSecret = s
	}
	rec, err := loadAudio(*wav, *codec)
	if err != nil {
		return fail(err)
	}
	o.Audio = rec
	if *roles != "" {
		o.Roles = strings.Split(*roles, ",")
	}
	if o.SourceAddrs, err = parseSources(*sources); err != nil {
		return fail(err)
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fail(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fail(fmt.Errorf("%s: no PEM certificate in it", *caFile))
		}
		o.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if *verify != "" {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: o.TLS}}
		o.Reports = &loadgen.HTTPReports{BaseURL: *verify, APIKey: o.APIKey, Client: client}
	}
	// Warnings (a stored report that does not hold what was sent) go to
	// stderr, so that a failed check can be traced to its calls.
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return fail(err)
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := loadgen.Run(ctx, o)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(s)
	} else {
		printSummary(stdout, s)
	}
	if !s.OK {
		return 1
	}
	return 0
}

// loadAudio reads the WAV file (or makes synthetic audio) in the codec
// asked for.
func loadAudio(path, codec string) (*audio.Recording, error) {
	var rec *audio.Recording
	if path == "" {
		rec = loadgen.Synthetic(10)
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if rec, err = audio.ParseWAV(b); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if codec == "" {
		return rec, nil
	}
	c, err := audio.ParseCodec(codec)
	if err != nil {
		return nil, err
	}
	if c == rec.Format.Codec {
		return rec, nil
	}
	lin := make([]int16, len(rec.Data)/rec.Format.Codec.BytesPerSample())
	audio.Decode(lin, rec.Data, rec.Format.Codec)
	f := rec.Format
	f.Codec = c
	return &audio.Recording{Format: f, Data: audio.Encode(nil, lin, c)}, nil
}

// parseSources reads "a,b,c" or "first-last" (IPv4, last octet varying).
func parseSources(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, b := net.ParseIP(first).To4(), net.ParseIP(last).To4()
		if a == nil || b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
			return nil, fmt.Errorf("source range %q: want a.b.c.x-a.b.c.y with x ≤ y", s)
		}
		var out []string
		for i := int(a[3]); i <= int(b[3]); i++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(i)).String())
		}
		return out, nil
	}
	out := strings.Split(s, ",")
	for _, a := range out {
		if net.ParseIP(a) == nil {
			return nil, fmt.Errorf("source address %q is not an IP address", a)
		}
	}
	return out, nil
}

func printSummary(w io.Writer, s *loadgen.Summary) {
	fmt.Fprintf(w, "calls: %d requested, %d started, %d completed, %d refused, %d dropped, %d failed\n",
		s.Requested, s.Calls.Started, s.Calls.Completed, s.Calls.Refused, s.Calls.Dropped, s.Calls.Failed)
	fmt.Fprintf(w, "audio: %d frames, %d bytes sent; %d scores received\n", s.FramesSent, s.AudioBytesSent, s.ScoresReceived)
	if l := s.AudioToScore; l != nil {
		fmt.Fprintf(w, "audio→score ms: p50 %.1f  p95 %.1f  p99 %.1f  max %.1f  (n=%d)\n", l.P50, l.P95, l.P99, l.Max, l.Count)
	} else {
		fmt.Fprintf(w, "audio→score: not applicable (%s sends no scores back)\n", s.Protocol)
	}
	l := s.StopToStopped
	fmt.Fprintf(w, "stop→stopped ms: p50 %.1f  p99 %.1f  max %.1f  (n=%d)\n", l.P50, l.P99, l.Max, l.Count)
	fmt.Fprintf(w, "hang-up: first→last stop %.0f ms, last stop→last report %.0f ms\n", s.Hangup.SpreadMS, s.Hangup.LastStopToLastStoppedMS)
	if s.Reports != nil {
		fmt.Fprintf(w, "stored reports: %d checked, %d ok, %d missing, %d mismatched\n", s.Reports.Checked, s.Reports.OK, s.Reports.Missing, s.Reports.Mismatched)
	}
	if s.ReportsUnverified > 0 {
		fmt.Fprintf(w, "stored reports: %d calls unverified (%s does not say what was stored; give --verify-reports)\n", s.ReportsUnverified, s.Protocol)
	}
	fmt.Fprintf(w, "client: %.1f%% CPU, %d KiB peak RSS, %d late frames; wall %.1f s\n", s.Client.CPUPercent, s.Client.MaxRSSKiB, s.LateFrames, s.WallS)
	if r := s.Reconnects; r.Count > 0 || r.Failed > 0 {
		fmt.Fprintf(w, "reconnects: %d resumed, %d failed; time ms p50 %.1f  p99 %.1f  max %.1f; %d bytes sent to a dead gateway not durable\n",
			r.Count, r.Failed, r.Time.P50, r.Time.P99, r.Time.Max, r.LostBytes)
	}
	if len(s.Errors) > 0 {
		fmt.Fprintf(w, "errors: %v\n", s.Errors)
	}
	if s.OK {
		fmt.Fprintln(w, "ok")
	}
}
