// Command fullcall-bench measures fullcall's live path and prints the
// figures: the memory each live call costs the server, and the time from
// hang-up to stored report when every call hangs up at once.
//
// It runs a fullcall server in this process and the gateway side (the load)
// in a child process, so that the server's heap holds only the server's
// share: N Record streams each receive S seconds of audio (as fast as the
// server takes it, with checkpoints and acknowledgements as in production),
// then hold; the server's live heap and goroutine stacks are measured
// against the idle baseline; then every call closes at once and the child
// measures, per call, the time from sending close to receiving the stored
// report.
//
//	fullcall-bench [-calls 200] [-seconds 60] [-database sqlite:PATH|postgres://...]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/fullcall"
	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/identity"
	"github.com/calmline/calmline/lib/tenant"
	"github.com/calmline/calmline/lib/voice/voicetest"
	"github.com/calmline/calmline/lib/wire"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func main() {
	calls := flag.Int("calls", 200, "concurrent live calls")
	seconds := flag.Int("seconds", 60, "seconds of audio each call receives before hanging up")
	database := flag.String("database", "", "store DSN (default: a SQLite file in a temporary directory)")
	every := flag.Duration("checkpoint-every", 2*time.Second, "audio between checkpoints")
	flag.DurationVar(&stagger, "stagger", 0, "hang up one call every so often instead of all at once")
	client := flag.String("client", "", "internal: run as the load against this address")
	flag.StringVar(&memProfile, "memprofile", "", "write the server's heap profile, taken while the calls hold, to this file")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write the server's CPU profile of the hang-ups to this file")
	flag.Parse()
	var err error
	if *client != "" {
		err = runClient(*client, *calls, *seconds)
	} else {
		err = runServer(*calls, *seconds, *database, *every)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fullcall-bench:", err)
		os.Exit(1)
	}
}

// result is what the client reports after the hang-up burst.
type result struct {
	Calls        int     `json:"calls"`
	P50MS        float64 `json:"finalise_p50_ms"`
	P90MS        float64 `json:"finalise_p90_ms"`
	P99MS        float64 `json:"finalise_p99_ms"`
	MaxMS        float64 `json:"finalise_max_ms"`
	BurstMS      float64 `json:"all_stored_ms"`
	FeedSeconds  float64 `json:"feed_s"`
	AudioSeconds float64 `json:"audio_s"`
}

func runServer(calls, seconds int, database string, every time.Duration) error {
	dir, err := os.MkdirTemp("", "fullcall-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if database == "" {
		database = "sqlite:" + filepath.Join(dir, "fullcall.db")
	}
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "bench"}})
	if err != nil {
		return err
	}
	o := fullcall.DefaultOptions()
	o.Tenants, o.Database, o.CheckpointEvery, o.Workers = reg, database, every, 0
	o.MaxCalls = calls + 10
	// The load plays the gateway: it gets the secret through the
	// environment.
	secret := identity.NewSecret()
	secrets, err := identity.ParseSecrets(secret)
	if err != nil {
		return err
	}
	if o.Identity, err = identity.NewKeyring(secrets...); err != nil {
		return err
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := fullcall.New(context.Background(), o)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), lis) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	}()

	base := measure()
	cmd := exec.Command(os.Args[0], "-client", lis.Addr().String(), "-calls", fmt.Sprint(calls), "-seconds", fmt.Sprint(seconds), "-stagger", stagger.String())
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), identity.EnvSecret+"="+secret)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "HOLDING" {
		return fmt.Errorf("the load did not reach the holding point: %q", sc.Text())
	}
	held := measure()
	if memProfile != "" {
		f, err := os.Create(memProfile)
		if err != nil {
			return err
		}
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer f.Close()
	}
	fmt.Fprintln(in, "CLOSE")
	if !sc.Scan() {
		return fmt.Errorf("no result from the load: %v", cmd.Wait())
	}
	pprof.StopCPUProfile()
	var r result
	if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
		return fmt.Errorf("result %q: %v", sc.Text(), err)
	}
	cmd.Wait()

	heapPer := float64(held.heap-base.heap) / float64(calls)
	stackPer := float64(held.stack-base.stack) / float64(calls)
	goPer := float64(held.goroutines-base.goroutines) / float64(calls)
	fmt.Printf("store            %s\n", strings.SplitN(database, ":", 2)[0])
	fmt.Printf("calls            %d, %d s of stereo G.711 each (%.0f s of audio fed, analysed and checkpointed in %.1f s)\n",
		calls, seconds, r.AudioSeconds, r.FeedSeconds)
	fmt.Printf("memory per call  %.1f KiB live heap + %.1f KiB goroutine stacks (%.1f goroutines)\n", heapPer/1024, stackPer/1024, goPer)
	if stagger > 0 {
		fmt.Printf("hang-ups         one every %v; all %d reports stored %.0f ms after the first close\n", stagger, r.Calls, r.BurstMS)
	} else {
		fmt.Printf("hang-up burst    all %d calls close at once; all reports stored %.0f ms after the first close\n", r.Calls, r.BurstMS)
	}
	fmt.Printf("finalisation     p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (close sent -> stored report received)\n", r.P50MS, r.P90MS, r.P99MS, r.MaxMS)
	j, _ := json.Marshal(map[string]any{
		"store": strings.SplitN(database, ":", 2)[0], "calls": calls, "seconds": seconds,
		"stagger": stagger.String(), "heap_per_call_bytes": heapPer, "stack_per_call_bytes": stackPer, "goroutines_per_call": goPer, "burst": r,
	})
	fmt.Println(string(j))
	return nil
}

var (
	memProfile string
	cpuProfile string
	stagger    time.Duration
)

type snapshot struct {
	heap, stack uint64
	goroutines  int
}

func measure() snapshot {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return snapshot{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// speech is stereo μ-law of synthetic speech-like voices (voicetest.Voice,
// what the voice analysis's own tests use): the caller and the agent take
// turns of about 5 s with some overlap, so that the analysis has voiced
// speech, turns and changing scores to keep.
func speech(seconds int) []byte {
	n := seconds * 8000
	c, a := make([]int16, n), make([]int16, n)
	caller := voicetest.Voice{F0: 210, Range: 4, Rate: 4.5, Level: -16, Dur: 5, Seed: 1}.Generate()
	agent := voicetest.Voice{F0: 120, Range: 2, Rate: 4, Level: -20, Dur: 5, Seed: 2}.Generate()
	for t := 0; t < n; t += 9 * 8000 { // caller 0–5 s, agent 4.5–9.5 s, repeated
		copy(c[t:], caller)
		if t+36000 < n {
			copy(a[t+36000:], agent)
		}
	}
	return audio.Encode(nil, audio.Interleave(nil, c, a), audio.CodecPCMU)
}

// liveCall is one call of the load.
type liveCall struct {
	stream   fullcallv1.IngestService_RecordClient
	acks     chan uint64   // acknowledgements
	acked    chan struct{} // the audio is acknowledged up to the last checkpoint
	holdOnce sync.Once
	done     chan time.Duration // close -> finished
	mu       sync.Mutex
	closed   time.Time
}

// maxAhead is how many chunks the load sends beyond the last
// acknowledgement: 4 s, two checkpoints, as a real-time gateway would be.
const maxAhead = 40

func runClient(addr string, calls, seconds int) error {
	data := speech(seconds)
	const chunk = 1600 // 100 ms
	nChunks := len(data) / chunk
	// A few connections, as a gateway's pool.
	var conns []*grpc.ClientConn
	secret, err := identity.FromEnv(identity.EnvSecret)
	if err != nil {
		return err
	}
	for range 4 {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(identity.Credentials(secret, identity.Gateway)))
		if err != nil {
			return err
		}
		defer cc.Close()
		conns = append(conns, cc)
	}
	reg, _ := tenant.NewRegistry([]*tenant.Tenant{{ID: "bench"}})
	tn, _ := reg.Tenant("bench")
	ctx := context.Background()
	start := time.Now()
	cs := make([]*liveCall, calls)
	var wg sync.WaitGroup
	errc := make(chan error, 2*calls)
	for i := range calls {
		c := &liveCall{acks: make(chan uint64, 1024), acked: make(chan struct{}), done: make(chan time.Duration, 1)}
		cs[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := fullcallv1.NewIngestServiceClient(conns[i%len(conns)]).Record(ctx)
			if err != nil {
				errc <- err
				return
			}
			c.stream = stream
			info := &callv1.Call{TenantId: "bench", CallId: fmt.Sprintf("bench-%d-%d", start.UnixNano(), i), AgentId: fmt.Sprintf("agent-%d", i%50),
				StartedAt: timestamppb.Now(), Protocol: "bench", Policy: wire.Policy(tn),
				Format: &callv1.MediaFormat{Codec: callv1.Codec_CODEC_PCMU, SampleRateHz: 8000,
					Channels: []callv1.ChannelRole{callv1.ChannelRole_CHANNEL_ROLE_CALLER, callv1.ChannelRole_CHANNEL_ROLE_AGENT}}}
			if err := stream.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Open{Open: &fullcallv1.OpenCall{Call: info}}}); err != nil {
				errc <- err
				return
			}
			go func() { // the call's receiver, until the report
				for {
					r, err := stream.Recv()
					if err != nil {
						errc <- fmt.Errorf("call %d: %w", i, err)
						return
					}
					if a := r.GetAck(); a != nil {
						c.acks <- a.Seq
						// The last checkpoint comes within 3 s of the end
						// (2 s apart, once the analysis completes a second).
						if a.Seq+30 >= uint64(nChunks) {
							c.holdOnce.Do(func() { close(c.acked) })
						}
					}
					if r.GetFinished() != nil {
						c.mu.Lock()
						c.done <- time.Since(c.closed)
						c.mu.Unlock()
						return
					}
				}
			}()
			var acked uint64
			for seq := 1; seq <= nChunks; seq++ {
				// A gateway streams in real time, so it is never far
				// ahead of fullcall's acknowledgements; faster than real
				// time, stay within maxAhead of them, as it would.
				for uint64(seq)-acked > maxAhead {
					acked = <-c.acks
				}
				if err := stream.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Chunk{Chunk: &callv1.AudioChunk{
					Seq: uint64(seq), StartSample: uint64(seq-1) * 800, Data: data[(seq-1)*chunk : seq*chunk]}}}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every call holds with its audio acknowledged up to its last
	// checkpoint (durable).
	for _, c := range cs {
		select {
		case <-c.acked:
		case err := <-errc:
			return err
		}
	}
	feed := time.Since(start)
	fmt.Println("HOLDING")
	bufio.NewScanner(os.Stdin).Scan()

	burst := time.Now()
	lat := make([]float64, 0, calls)
	var lmu sync.Mutex
	for i, c := range cs {
		if stagger > 0 && i > 0 {
			time.Sleep(stagger) // pacing the hang-ups, as calls end over time
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.mu.Lock()
			c.closed = time.Now()
			c.mu.Unlock()
			if err := c.stream.Send(&fullcallv1.RecordRequest{Msg: &fullcallv1.RecordRequest_Close{Close: &fullcallv1.CloseCall{
				LastSeq: uint64(nChunks), EndSample: uint64(nChunks) * 800, Reason: fullcallv1.EndReason_END_REASON_HANGUP}}}); err != nil {
				errc <- err
				return
			}
			c.stream.CloseSend()
			var d time.Duration
			select {
			case d = <-c.done:
			case <-time.After(time.Minute):
				errc <- fmt.Errorf("no report a minute after close")
				return
			}
			lmu.Lock()
			lat = append(lat, float64(d.Microseconds())/1000)
			lmu.Unlock()
		}()
	}
	wg.Wait()
	all := time.Since(burst)
	if len(lat) != calls {
		return fmt.Errorf("%d of %d reports came back: %v", len(lat), calls, <-errc)
	}
	sort.Float64s(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return json.NewEncoder(os.Stdout).Encode(result{
		Calls: len(lat), P50MS: q(0.50), P90MS: q(0.90), P99MS: q(0.99), MaxMS: lat[len(lat)-1],
		BurstMS: float64(all.Microseconds()) / 1000, FeedSeconds: feed.Seconds(), AudioSeconds: float64(calls * seconds),
	})
}
