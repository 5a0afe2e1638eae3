package capacity

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestMeasuredParses(t *testing.T) {
	in, err := Parse(Measured)
	if err != nil {
		t.Fatalf("the embedded data file: %v", err)
	}
	n := 0
	in.each(func(key string, v *Input) {
		n++
		if v.Source.Where == "" || v.Source.Kind == "" {
			t.Errorf("%s has no source", key)
		}
		if v.Source.Kind == "measured" && !strings.HasPrefix(v.Source.Date, "2026-") {
			t.Errorf("%s: measured on %q; want the date of the run", key, v.Source.Date)
		}
	})
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(Measured, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != n {
		t.Errorf("the data file has %d inputs; the model reads %d", len(raw), n)
	}
}

// TestDerivedInputs keeps the derived inputs the arithmetic their notes
// state, so that a measured figure patched alone (a re-run of a
// benchmark) fails here until what depends on it is derived again.
func TestDerivedInputs(t *testing.T) {
	in, err := Parse(Measured)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key       string
		got, want float64
	}{
		// The backends' process split by fullcall's measured share.
		{"fullcall_cpu_core_per_call", in.FullcallCPU.Value, in.BackendsCPU.Value * in.FullcallShare.Value},
		{"realtime_cpu_core_per_call", in.RealtimeCPU.Value, in.BackendsCPU.Value * (1 - in.FullcallShare.Value)},
		// fullcall analysing everything = its live path + both channels.
		{"fullcall_alone_cpu_core_per_call", in.FullcallAloneCPU.Value, in.FullcallCPU.Value + 2/in.VoiceSpeed.Value},
		{"fullcall_alone_rss_kib_per_call", in.FullcallAloneRSS.Value, 2 * in.FullcallLive.Value},
		{"realtime_rss_kib_per_call", in.RealtimeRSS.Value, in.StackRSS.Value - in.GatewayRSS.Value - in.FullcallRSS.Value},
	} {
		// The data file rounds to three or four significant digits.
		if math.Abs(c.got-c.want) > 0.005*c.want {
			t.Errorf("%s = %v; its derivation gives %.6g: derive it again from the measured inputs (and its note)", c.key, c.got, c.want)
		}
		var src Input
		in.each(func(key string, v *Input) {
			if key == c.key {
				src = *v
			}
		})
		if src.Source.Kind != "derived" {
			t.Errorf("%s is %q; want derived", c.key, src.Source.Kind)
		}
	}
	// The per-service figures come from a run with the gateway and the
	// backends in separate processes; the one-process stack must not
	// cost more than their sum (it shares gRPC, buffers and the runtime).
	if sum := in.GatewayCPU.Value + in.RealtimeCPU.Value + in.FullcallCPU.Value; in.StackCPU.Value > sum*1.1 {
		t.Errorf("stack %v core per call is more than the services' sum %v + 10 %%: the split misses a cost", in.StackCPU.Value, sum)
	}
}

// TestParseRefuses checks that a data file cannot lose a source or gain a
// figure the model does not read without an error.
func TestParseRefuses(t *testing.T) {
	var base map[string]map[string]any
	if err := json.Unmarshal(Measured, &base); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		change func(m map[string]map[string]any)
		want   string
	}{
		{"unknown input", func(m map[string]map[string]any) {
			m["gateway_cpu_per_call"] = m["gateway_cpu_core_per_call"]
		}, `unknown field "gateway_cpu_per_call"`},
		{"missing input", func(m map[string]map[string]any) { delete(m, "checkpoint_bytes") }, "checkpoint_bytes: missing"},
		{"no source", func(m map[string]map[string]any) {
			m["frame_ms"]["source"] = map[string]any{"kind": "constant"}
		}, "frame_ms: no source"},
		{"measured without command", func(m map[string]map[string]any) {
			delete(m["gateway_rss_kib_per_call"]["source"].(map[string]any), "command")
		}, "gateway_rss_kib_per_call: a measured figure needs its command, date and machine"},
		{"derived without a note", func(m map[string]map[string]any) {
			delete(m["realtime_rss_kib_per_call"]["source"].(map[string]any), "note")
		}, "realtime_rss_kib_per_call: a derived figure needs a note"},
		{"unknown kind", func(m map[string]map[string]any) {
			m["tcp_mss_bytes"]["source"].(map[string]any)["kind"] = "guess"
		}, `source kind "guess"`},
		{"zero", func(m map[string]map[string]any) { m["call_seconds"]["value"] = 0 }, "call_seconds: value 0 must be positive"},
		{"a share over 1", func(m map[string]map[string]any) { m["fullcall_share_of_backends_cpu"]["value"] = 1.2 },
			"fullcall_share_of_backends_cpu: 1.2 must be under 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m map[string]map[string]any
			json.Unmarshal(Measured, &m)
			c.change(m)
			b, _ := json.Marshal(m)
			_, err := Parse(b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Parse = %v; want an error containing %q", err, c.want)
			}
		})
	}
}

// small is a data file with round numbers, so that the arithmetic can be
// followed by hand.
func small(t *testing.T) *Inputs {
	t.Helper()
	in, err := Parse(Measured)
	if err != nil {
		t.Fatal(err)
	}
	set := func(v *Input, x float64) { v.Value = x }
	set(&in.GatewayCPU, 0.01)       // 50 calls per core at 50 %
	set(&in.RealtimeCPU, 0.02)      // 25
	set(&in.FullcallCPU, 0.04)      // 12
	set(&in.FullcallAloneCPU, 0.14) // 3 while fullcall analyses everything
	set(&in.FullcallAloneRSS, 4096)
	set(&in.AnalysisBytes, 1000)
	set(&in.GatewayRSS, 1024) // 1 MiB
	set(&in.RealtimeRSS, 2048)
	set(&in.FullcallRSS, 1024)
	set(&in.CallSeconds, 100)
	set(&in.FinalizeCPU, 10)
	set(&in.AlertsPerHour, 36) // 0.01 alert/s per call
	set(&in.AlertsPerInst, 10) // 5 at 50 %
	set(&in.TxPerAlert, 3)
	set(&in.CheckpointSize, 1000)
	set(&in.ReportSize, 500)
	set(&in.DBConns, 16)
	set(&in.DeliveryConns, 8)
	set(&in.OneMachine, 100)
	set(&in.PGTxCeiling, 1000)
	set(&in.PGMaxConns, 100)
	return in
}

func TestComputeArithmetic(t *testing.T) {
	in := small(t)
	o := Options{Cores: 1, Target: 0.5, CheckpointEvery: 2, TLS: false, MinInstances: 2}
	for _, c := range []struct {
		calls           int
		gw, rt, fc, esc int
	}{
		{1, 2, 2, 2, 2},       // the minimum, for redundancy
		{100, 2, 4, 9, 2},     // 100/50, 100/25, 100/12 = 8.3 → 9
		{101, 3, 5, 9, 2},     // one call over a multiple rounds up
		{1000, 20, 40, 84, 2}, // 10 alerts/s over 5 per instance
		{1001, 21, 41, 84, 3}, // 10.01 alerts/s → 3
	} {
		p, err := Compute(in, o, c.calls)
		if err != nil {
			t.Fatal(err)
		}
		if p.Gateway != c.gw || p.Realtime != c.rt || p.Fullcall != c.fc || p.Escalation != c.esc {
			t.Errorf("%d calls: instances gateway %d realtime %d fullcall %d escalation %d; want %d %d %d %d",
				c.calls, p.Gateway, p.Realtime, p.Fullcall, p.Escalation, c.gw, c.rt, c.fc, c.esc)
		}
	}
	p, err := Compute(in, o, 1000)
	if err != nil {
		t.Fatal(err)
	}
	approx := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
	// Realtime down: 1,000 calls cost fullcall 0.1 core more each (100
	// cores); 84 one-core instances have 84 - 40 = 44 spare, so 44 % of
	// the calls; all of them need ⌈1000 / 3⌉ instances and 4 GiB more.
	approx("realtime-down share", p.RealtimeDownShare, 0.44)
	if p.FullcallAlone != 334 || p.CallsPerFullcallAlone != 3 {
		t.Errorf("fullcall analysing everything: %d instances of %d calls; want 334 of 3", p.FullcallAlone, p.CallsPerFullcallAlone)
	}
	approx("fullcall-alone memory GiB", p.FullcallAloneGiB, 1000*4096.0/(1<<20))
	if p, _ := Compute(in, o, 1); p.RealtimeDownShare != 1 {
		t.Errorf("one call on 2 fullcall instances: realtime-down share %v; want 1 (capped)", p.RealtimeDownShare)
	}
	// 1000 calls × 0.07 core + 10 hang-ups/s × 10 ms.
	approx("cores", p.Cores, 70+0.1)
	approx("memory GiB", p.MemoryGiB, 1000*4096.0/(1<<20))
	// 500 checkpoints/s + 2 × 10 hang-ups/s + 10 alerts/s × 3.
	approx("PostgreSQL tx/s", p.DBWriteTx, 500+20+30)
	approx("PostgreSQL MB/s", p.DBWriteMBps, (500*1000+10*500)/1e6)
	if p.DBConns != 16*(84+2) || p.SNATPorts != 8*2 {
		t.Errorf("connections %d, SNAT ports %d; want %d, %d", p.DBConns, p.SNATPorts, 16*86, 16)
	}
	// Ten times what one machine takes: the shared limits decide, and
	// 16 × 86 = 1,376 connections against 100 come before 550 of 1,000
	// transactions/s.
	if p.Next != "PostgreSQL connections" {
		t.Errorf("next bottleneck = %q; want PostgreSQL connections (13.76 of the ceiling)", p.Next)
	}
	in.HandshakeCPU.Value = 2
	o.TLS = true
	if p, _ := Compute(in, o, 1000); math.Abs(p.Cores-(70+0.1+10*0.002)) > 1e-9 {
		t.Errorf("cores with TLS = %v; want 10 handshakes/s × 2 ms more", p.Cores)
	}
	o.TLS = false
	p, _ = Compute(in, o, 50)
	if p.Next != "one machine running everything (measured)" {
		t.Errorf("at 50 calls next bottleneck = %q; want the one machine (50 %% of 100 calls)", p.Next)
	}
}

func TestBandwidth(t *testing.T) {
	in, err := Parse(Measured)
	if err != nil {
		t.Fatal(err)
	}
	// A 20 ms stereo G.711 frame: 320 bytes of audio + 8 (WebSocket,
	// masked, 16-bit length) + 32 (TCP with timestamps) + 20 (IPv4).
	if got := in.EdgeBytesPerFrame(false); got != 380 {
		t.Errorf("edge bytes per frame without TLS = %v; want 380", got)
	}
	if got := in.EdgeBytesPerFrame(true); got != 402 {
		t.Errorf("edge bytes per frame with TLS = %v; want 402 (+22 for a TLS 1.3 record)", got)
	}
	if got := in.EdgeBitsPerSecond(true); got != 160800 {
		t.Errorf("edge bits/s = %v; want 402 × 8 × 50 = 160,800", got)
	}
	// 200 ms chunk: 3200 + 34 bytes in 3 segments of ≤ 1448, 52 bytes of
	// headers each, 5 chunks a second.
	if got := in.InternalBitsPerSecond(); got != (3234+3*52)*8*5 {
		t.Errorf("internal bits/s = %v; want %v", got, (3234+3*52)*8*5)
	}
	p, err := Compute(in, DefaultOptions(), 100000)
	if err != nil {
		t.Fatal(err)
	}
	// Both backends get the audio; fullcall also realtime's analyses.
	if want := 100000 * (2*in.InternalBitsPerSecond() + 8*in.AnalysisBytes.Value) / 1e9; math.Abs(p.InternalGbps-want) > 1e-9 {
		t.Errorf("internal at 100,000 calls = %v Gbit/s; want %v with the analyses", p.InternalGbps, want)
	}
	if p.PayloadGbps != 12.8 {
		t.Errorf("payload at 100,000 calls = %v Gbit/s; want 12.8 (the brief's figure)", p.PayloadGbps)
	}
	if math.Abs(p.EdgeGbps-16.08) > 1e-9 {
		t.Errorf("edge at 100,000 calls = %v Gbit/s; want 16.08", p.EdgeGbps)
	}
}

func TestComputeRefuses(t *testing.T) {
	in, _ := Parse(Measured)
	for _, o := range []Options{
		{Cores: 0, Target: 0.5, CheckpointEvery: 2, MinInstances: 1},
		{Cores: 2, Target: 1.5, CheckpointEvery: 2, MinInstances: 1},
		{Cores: 2, Target: 0.5, CheckpointEvery: 30, MinInstances: 1},
		{Cores: 2, Target: 0.5, CheckpointEvery: 2, MinInstances: 0},
	} {
		if _, err := Compute(in, o, 10); err == nil {
			t.Errorf("Compute with %+v: no error", o)
		}
	}
	if _, err := Compute(in, DefaultOptions(), 0); err == nil {
		t.Error("Compute with 0 calls: no error")
	}
}

func TestWriteTable(t *testing.T) {
	in, _ := Parse(Measured)
	var plans []Plan
	for _, n := range []int{150, 100000} {
		p, err := Compute(in, DefaultOptions(), n)
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, p)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, plans); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.HasPrefix(strings.TrimSpace(lines[0]), "calls  gateway  realtime  fullcall  escalation") {
		t.Errorf("header = %q", lines[0])
	}
	if f := strings.Fields(lines[2]); f[0] != "100,000" || f[8] != "16.1" {
		t.Errorf("100,000 row = %q; want calls first and 16.1 Gbit/s at the edge", lines[2])
	}
	if !strings.Contains(b.String(), "150 calls: next bottleneck: one machine running everything (measured) (25.0 %)") {
		t.Errorf("no next-bottleneck line for 150 calls (150 of the 600 one machine passed) in:\n%s", b.String())
	}
}

func TestGroup(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %q; want %q", n, got, want)
		}
	}
}
