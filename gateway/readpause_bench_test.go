package gateway

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/calmline/calmline/gateway/asterisk"
	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/twilio"
	"github.com/calmline/calmline/lib/audio"
)

// readSyscalls returns the process's read system calls so far
// (/proc/self/io's syscr; 0 where there is none).
func readSyscalls() float64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "syscr: "); ok {
			var n float64
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// BenchmarkProtocolsRealTime streams one call of 4 s of stereo μ-law per
// iteration over the AudioHook, Twilio-style and Asterisk paths at the
// wall clock's pace, as a PBX sends (BenchmarkProtocols streams as fast
// as the connection takes it, which read pauses leave alone). It reports
// the process's read system calls (client, gateway and fake backends) and
// CPU time per second of call audio: what read pausing between chunks
// saves. Run it with -benchtime=1x (each iteration takes 4 s).
func BenchmarkProtocolsRealTime(b *testing.B) {
	addr, key, secret := benchGateway(b, func(*Options) {})
	const seconds = 4
	rec := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: make([]byte, seconds*16000)}
	for i := range rec.Data {
		rec.Data[i] = byte(i*7 + i/320)
	}
	ctx := context.Background()
	seq := 0
	calls := map[string]func() error{
		"audiohook": func() error {
			_, err := (&audiohook.Client{URL: addr + "/ws/audiohook", APIKey: key, ClientSecret: secret}).Stream(ctx, rec,
				audiohook.StreamOptions{RealTime: true, PingInterval: time.Second})
			return err
		},
		"twilio": func() error {
			seq++
			_, err := (&twilio.Client{URL: addr + "/ws/twilio", APIKey: key}).Stream(ctx, rec, twilio.StreamOptions{CallID: fmt.Sprintf("t-%d", seq), RealTime: true})
			return err
		},
		"asterisk": func() error {
			seq++
			_, err := (&asterisk.Client{URL: addr + "/ws/asterisk", APIKey: key}).Stream(ctx, rec, asterisk.StreamOptions{CallID: fmt.Sprintf("a-%d", seq), RealTime: true})
			return err
		},
	}
	for _, p := range []string{"audiohook", "twilio", "asterisk"} {
		b.Run(p, func(b *testing.B) {
			call := calls[p]
			cpu0, reads0 := cpuTime(), readSyscalls()
			b.ResetTimer()
			for range b.N {
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu, reads := cpuTime()-cpu0, readSyscalls()-reads0
			b.ReportMetric(reads/float64(b.N*seconds), "reads/audio-s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*seconds), "cpu-µs/audio-s")
		})
	}
}
