package audio

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func sine16k(freq, amp float64, n int) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(math.Round(amp * math.Sin(2*math.Pi*freq*float64(i)/16000)))
	}
	return s
}

// rms returns the RMS of s, skipping the first and last skip samples.
func rms(s []int16, skip int) float64 {
	var sum float64
	s = s[skip : len(s)-skip]
	for _, v := range s {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(s)))
}

func TestDownsampleResponse(t *testing.T) {
	const amp = 16000
	for _, c := range []struct {
		freq   float64
		minDB  float64 // gain bounds, dB
		maxDB  float64
		reason string
	}{
		{300, -0.05, 0.05, "pass band"},
		{1000, -0.05, 0.05, "pass band"},
		{3400, -0.1, 0.05, "pass-band edge"},
		{4600, math.Inf(-1), -60, "stop band (would alias to 3.4 kHz)"},
		{5500, math.Inf(-1), -60, "stop band (would alias to 2.5 kHz)"},
		{7500, math.Inf(-1), -60, "stop band (would alias to 500 Hz)"},
	} {
		out := Downsample16kTo8k(nil, sine16k(c.freq, amp, 16000))
		if len(out) != 8000 {
			t.Fatalf("%v Hz: %d output samples; want 8000", c.freq, len(out))
		}
		gain := 20 * math.Log10(rms(out, 100)/(amp/math.Sqrt2))
		if gain < c.minDB || gain > c.maxDB {
			t.Errorf("%v Hz (%s): gain %.2f dB; want %v..%v dB", c.freq, c.reason, gain, c.minDB, c.maxDB)
		}
	}
}

func TestDownsampleAlignment(t *testing.T) {
	// A slow sine keeps its phase: output i matches input 2i.
	in := sine16k(200, 10000, 4000)
	out := Downsample16kTo8k(nil, in)
	for i := 50; i < len(out)-50; i++ {
		if d := math.Abs(float64(out[i]) - float64(in[2*i])); d > 5 {
			t.Fatalf("sample %d: got %d; want %d (input sample %d)", i, out[i], in[2*i], 2*i)
		}
	}
	if got, want := len(Downsample16kTo8k(nil, in[:7])), 4; got != want {
		t.Errorf("7 samples in: %d out; want %d", got, want)
	}
}

func TestDownsamplerChunking(t *testing.T) {
	in := make([]int16, 5000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range in {
		in[i] = int16(r.IntN(20000) - 10000)
	}
	var whole Downsampler
	want := make([]int16, whole.OutputLen(len(in)))
	want = want[:whole.Process(want, in)]

	var d Downsampler
	var got []int16
	buf := make([]int16, 1000)
	for rest := in; len(rest) > 0; {
		n := min(len(rest), 1+r.IntN(700))
		if d.OutputLen(n) > len(buf) {
			t.Fatal("buffer too small")
		}
		k := d.Process(buf, rest[:n])
		got = append(got, buf[:k]...)
		rest = rest[n:]
	}
	if !slices.Equal(got, want) {
		t.Fatalf("chunked output differs from one-shot output (%d vs %d samples)", len(got), len(want))
	}
}

func TestDownsamplerNoAllocs(t *testing.T) {
	var d Downsampler
	in := make([]int16, 1600)
	out := make([]int16, 800)
	if n := testing.AllocsPerRun(100, func() { d.Process(out, in) }); n != 0 {
		t.Errorf("Process allocates %v times per call", n)
	}
}

func FuzzDownsampler(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5}, uint8(3))
	f.Add(make([]byte, 600), uint8(255))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		in := make([]int16, len(b)/2)
		Decode(in, b[:2*len(in)], CodecL16)
		var d Downsampler
		out := make([]int16, 0, len(in))
		buf := make([]int16, 256)
		step := int(chunk) + 1
		for i := 0; i < len(in); i += step {
			j := min(i+step, len(in))
			n := d.Process(buf, in[i:j])
			out = append(out, buf[:n]...)
		}
		if len(out) != len(in)/2 {
			t.Fatalf("%d samples in, %d out; want %d", len(in), len(out), len(in)/2)
		}
		n := d.Flush(buf)
		if n > FlushLen {
			t.Fatalf("flush wrote %d samples; want at most %d", n, FlushLen)
		}
	})
}

// BenchmarkDownsample measures the 16→8 kHz filter: one op is 100 ms of
// one channel.
func BenchmarkDownsample(b *testing.B) {
	in := sine16k(440, 8000, 1600)
	out := make([]int16, 800)
	var d Downsampler
	b.ReportAllocs()
	for b.Loop() {
		d.Process(out, in)
	}
	b.ReportMetric(float64(b.N)*0.1/b.Elapsed().Seconds(), "x_realtime")
}

// BenchmarkConvertStereoPCMU measures decoding and de-interleaving 100 ms
// of stereo μ-law, the services' usual input.
func BenchmarkConvertStereoPCMU(b *testing.B) {
	c, _ := NewConverter(Format{CodecPCMU, 8000, 2})
	raw := make([]byte, 1600)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Convert(raw)
	}
	b.ReportMetric(float64(b.N)*0.1/b.Elapsed().Seconds(), "x_realtime")
}
