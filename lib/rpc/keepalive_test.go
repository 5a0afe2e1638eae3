package rpc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/calmline/calmline/lib/service"
)

// The keepalive tests stop a real process with SIGSTOP: its kernel still
// holds the TCP connection open and acknowledges what arrives, but nothing
// answers — no FIN, no RST, as when a VM freezes or a network drops
// packets. Only keepalive can notice. The test binary plays the other
// process, re-executed with helperEnv naming its role.
const helperEnv = "CALMLINE_RPC_TEST_HELPER"

// detectBound is the goal: a silently dead peer noticed within 15 s.
const detectBound = 15 * time.Second

// runHelper runs the test binary as a helper process until its stdin
// closes, and returns its exit code.
func runHelper(role string) int {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	switch role {
	case "backend":
		// A backend with the services' own settings (lib/service).
		h := service.NewHost(service.Options{Name: "helper"})
		h.GRPC.RegisterService(holdServiceDesc(nil), nil)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(lis.Addr())
		if err := h.Serve(ctx, lis); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "client":
		// A gateway's side: a stream through lib/rpc's client.
		cc, err := Dial(os.Getenv(helperEnv+"_TARGET"), Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cc.Close()
		s, err := openHold(ctx, cc)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("open", s.backend)
		<-ctx.Done()
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.Closer
	line  string // the first line it printed
}

func startHelper(t *testing.T, role string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		stdin.Close()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("helper %s printed nothing", role)
		}
		h.line = l
	case <-time.After(30 * time.Second):
		t.Fatalf("helper %s did not start", role)
	}
	return h
}

func (h *helper) stop(t *testing.T) time.Time {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// TestClientDetectsStoppedBackend: a gateway's stream on a backend that
// stops answering fails within the bound, and the next stream goes to the
// other backend.
func TestClientDetectsStoppedBackend(t *testing.T) {
	t.Parallel()
	a, b := startHelper(t, "backend"), startHelper(t, "backend")
	p, err := NewPool(a.line+","+b.line, 1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Open streams until both backends carry one.
	streams := map[string]*holdStream{}
	for len(streams) < 2 {
		s, err := openHold(ctx, p.Conn())
		if err != nil {
			t.Fatal(err)
		}
		streams[s.backend] = s
	}
	victim := streams[a.line]
	failed := make(chan error, 1)
	go func() {
		var m healthpb.HealthCheckRequest
		failed <- victim.RecvMsg(&m)
	}()
	stoppedAt := a.stop(t)
	select {
	case err := <-failed:
		took := time.Since(stoppedAt)
		t.Logf("client noticed the stopped backend after %.1f s (%v)", took.Seconds(), err)
		if took > detectBound {
			t.Errorf("client noticed the stopped backend after %v; want ≤ %v", took, detectBound)
		}
	case <-time.After(detectBound + 5*time.Second):
		t.Fatalf("client did not notice the stopped backend in %v", detectBound+5*time.Second)
	}
	// New streams go to the live backend, promptly.
	for range 4 {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := openHold(sctx, p.Conn())
		scancel()
		if err != nil {
			t.Fatalf("a new stream after the stop: %v", err)
		}
		if s.backend != b.line {
			t.Fatalf("a new stream went to %s; want the live backend %s", s.backend, b.line)
		}
	}
	// The survivor's stream never noticed.
	if err := streams[b.line].echo("still here"); err != nil {
		t.Errorf("the live backend's stream broke: %v", err)
	}
}

// TestServerDetectsStoppedClient: a backend cancels the streams of a client
// (a gateway) that stops answering within the bound, so their calls'
// state is released.
func TestServerDetectsStoppedClient(t *testing.T) {
	t.Parallel()
	opened := make(chan context.Context, 1)
	h := service.NewHost(service.Options{Name: "backend"})
	h.GRPC.RegisterService(holdServiceDesc(func(ctx context.Context) { opened <- ctx }), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- h.Serve(context.Background(), lis) }()
	defer func() {
		h.Shutdown(context.Background())
		<-served
	}()
	c := startHelper(t, "client", helperEnv+"_TARGET="+lis.Addr().String())
	if !strings.HasPrefix(c.line, "open") {
		t.Fatalf("client helper said %q", c.line)
	}
	var streamCtx context.Context
	select {
	case streamCtx = <-opened:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's stream never opened")
	}
	stoppedAt := c.stop(t)
	select {
	case <-streamCtx.Done():
		took := time.Since(stoppedAt)
		t.Logf("server cancelled the stopped client's stream after %.1f s", took.Seconds())
		if took > detectBound {
			t.Errorf("server cancelled the stopped client's stream after %v; want ≤ %v", took, detectBound)
		}
	case <-time.After(detectBound + 5*time.Second):
		t.Fatalf("server did not notice the stopped client in %v", detectBound+5*time.Second)
	}
}
