package wsclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/lib/audio"
)

func TestDialRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unsigned","message":"sign it"}}`))
	}))
	defer srv.Close()
	_, err := Dial(context.Background(), nil, "audiohook", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	var re *RefusedError
	if !errors.As(err, &re) || re.Status != http.StatusUnauthorized || re.Code != "unsigned" || !strings.Contains(re.Body, "sign it") {
		t.Fatalf("err %v (%#v); want a 401 refusal with code unsigned and the body", err, re)
	}
	if !strings.HasPrefix(err.Error(), "audiohook: server refused") {
		t.Errorf("message %q does not name the protocol", err)
	}
	// A refusal whose body is not the JSON error keeps the body, no code.
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", http.StatusForbidden) })
	_, err = Dial(context.Background(), nil, "twilio", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if !errors.As(err, &re) || re.Status != http.StatusForbidden || re.Code != "" || re.Body != "nope\n" {
		t.Fatalf("err %v; want a 403 refusal with the plain body", err)
	}
}

func TestDialAndWaitClose(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.ReadMessage() // the client's frame
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4410, "idle"), time.Now().Add(time.Second))
	}))
	defer srv.Close()
	ws, err := Dial(context.Background(), nil, "twilio", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("hi"))
	code, text, err := WaitClose(ws, 5*time.Second)
	if err != nil || code != 4410 || text != "idle" {
		t.Fatalf("WaitClose = %d %q %v; want 4410 idle", code, text, err)
	}
}

func TestWaitNormalClose(t *testing.T) {
	up := websocket.Upgrader{}
	var code int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "bye"), time.Now().Add(time.Second))
		ws.ReadMessage()
	}))
	defer srv.Close()
	for _, c := range []struct {
		code    int
		wantErr string
	}{{websocket.CloseNormalClosure, ""}, {4420, "twilio: stream closed with 4420 bye"}} {
		code = c.code
		ws, err := Dial(context.Background(), nil, "twilio", "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, text, err := Conn{WS: ws}.WaitNormalClose("twilio: stream", 5*time.Second)
		if got != c.code || text != "bye" || (c.wantErr == "") != (err == nil) || err != nil && err.Error() != c.wantErr {
			t.Errorf("close %d: WaitNormalClose = %d %q %v; want the close and error %q", c.code, got, text, err, c.wantErr)
		}
	}
}

func TestPacerSeconds(t *testing.T) {
	p := NewPacer(false, 20*time.Millisecond)
	defer p.Stop()
	for pos := 20 * time.Millisecond; pos <= 2500*time.Millisecond; pos += 20 * time.Millisecond {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.Sent(pos)
	}
	if len(p.SecondSent) != 2 {
		t.Fatalf("%d seconds noted after 2.5 s; want 2", len(p.SecondSent))
	}
	rt := NewPacer(true, time.Hour)
	defer rt.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rt.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context = %v; want context.Canceled", err)
	}
}

func TestPlayBytes(t *testing.T) {
	// 2.5 s of 16-bit audio at 8 kHz in 20 ms packets: 320 bytes each,
	// the last one short.
	const rate, width = 8000, 2
	n := rate*width*5/2 + 100
	var next int
	var positions []time.Duration
	sent, err := PlayBytes(context.Background(), false, 20*time.Millisecond, rate, width, n,
		func(pos time.Duration) { positions = append(positions, pos) },
		func(i, off, end int) error {
			if off != next || end <= off || end-off > 320 || i != off/320 {
				t.Fatalf("packet %d is [%d, %d); want it to start at %d with at most 320 bytes", i, off, end, next)
			}
			next = end
			return nil
		})
	if err != nil || next != n {
		t.Fatalf("PlayBytes = %v after %d of %d bytes", err, next, n)
	}
	if len(positions) != (n+319)/320 || positions[len(positions)-1] != time.Duration(n/width)*time.Second/rate {
		t.Fatalf("%d positions ending at %v; want %d ending at the stream's end", len(positions), positions[len(positions)-1], (n+319)/320)
	}
	if len(sent) != 2 {
		t.Fatalf("%d whole seconds noted after 2.5 s; want 2", len(sent))
	}
	// A send error stops the stream and comes back; nothing is noted for
	// the packet that failed.
	boom := errors.New("boom")
	positions = nil
	_, err = PlayBytes(context.Background(), false, 20*time.Millisecond, rate, width, n,
		func(pos time.Duration) { positions = append(positions, pos) },
		func(i, _, _ int) error {
			if i == 3 {
				return boom
			}
			return nil
		})
	if !errors.Is(err, boom) || len(positions) != 3 {
		t.Fatalf("err %v after %d packets; want boom after 3", err, len(positions))
	}
	// A packet shorter than a sample is refused, not looped on.
	if _, err := PlayBytes(context.Background(), false, 100*time.Microsecond, rate, width, n, nil, func(int, int, int) error { return nil }); err == nil {
		t.Fatal("a 100 µs packet at 8 kHz was played")
	}
	// In real time a cancelled context ends the stream before any send.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Play(ctx, true, time.Hour, 10, nil, func(int) (time.Duration, error) {
		t.Fatal("a packet was sent after the context ended")
		return 0, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Play on a cancelled context = %v; want context.Canceled", err)
	}
}

func TestCloseOf(t *testing.T) {
	if code, text, err := CloseOf(&websocket.CloseError{Code: 4420, Text: "too fast"}); code != 4420 || text != "too fast" || err != nil {
		t.Errorf("CloseOf(close error) = %d %q %v; want 4420 \"too fast\" nil", code, text, err)
	}
	other := errors.New("connection reset")
	if code, _, err := CloseOf(other); code != 0 || err != other {
		t.Errorf("CloseOf(other) = %d %v; want 0 and the error", code, err)
	}
}

func TestTracks(t *testing.T) {
	// A stereo PCMU recording: the caller's bytes are 'c', the agent's 'a'.
	stereo := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 2}, Data: []byte("cacaca")}
	got, err := Tracks(stereo, audio.CodecPCMU, []string{"outbound", "inbound"}, "outbound", true)
	if err != nil || len(got) != 2 || string(got[0]) != "aaa" || string(got[1]) != "ccc" {
		t.Fatalf("Tracks(stereo) = %q %v; want the agent's then the caller's channel", got, err)
	}
	mono := &audio.Recording{Format: audio.Format{Codec: audio.CodecPCMU, SampleRate: 8000, Channels: 1}, Data: []byte("ccc")}
	got, err = Tracks(mono, audio.CodecPCMU, []string{"caller", "agent"}, "agent", false)
	if err != nil || len(got) != 2 || string(got[0]) != "ccc" || string(got[1]) != "ccc" {
		t.Fatalf("Tracks(mono) = %q %v; want the one channel for both tracks", got, err)
	}
	if _, err := Tracks(mono, audio.CodecPCMU, []string{"external", "internal"}, "internal", true); err == nil || !strings.Contains(err.Error(), "no internal channel") {
		t.Fatalf("strict Tracks(mono) with an agent track = %v; want an error naming the missing channel", err)
	}
	if _, err := Tracks(stereo, audio.CodecPCMU, nil, "agent", false); err == nil {
		t.Fatal("Tracks without tracks made a stream")
	}
}
