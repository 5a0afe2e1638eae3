package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/calmline/calmline/gateway/audiohook"
	"github.com/calmline/calmline/gateway/gatewaytest"
	"github.com/calmline/calmline/gateway/session"
	"github.com/calmline/calmline/lib/tenant"
)

// cpuTime returns the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProtocols streams one call of 2 s of stereo μ-law per
// iteration over each protocol, as fast as the connection takes it,
// through a real gateway (loopback WebSockets, real gRPC to scriptable
// backends). It reports the CPU time (client, gateway and fake backends,
// all in this process) per second of call audio: what one call costs on
// each protocol, side by side. The Twilio-style client pays for JSON and
// base64 as the server does, so that row counts that work twice.
func BenchmarkProtocols(b *testing.B) {
	addr, key, secret := benchGateway(b, func(o *Options) {
		o.Session.Pacing.Policy = session.PaceOff // calls go as fast as the connection takes them
	})
	const seconds = 10
	data := make([]byte, seconds*16000)
	for i := range data {
		data[i] = byte(i*7 + i/320)
	}
	// The clients' messages are made before the clock starts, so that
	// the figures are the gateway's (and the fake backends') work, not
	// the clients' JSON and base64.
	var twilioMedia [][]byte
	for i, off := 0, 0; off < len(data)/2; i, off = i+1, off+160 {
		for c, track := range []string{"inbound", "outbound"} {
			payload := make([]byte, 160)
			for k := range payload {
				payload[k] = data[2*(off+k)+c]
			}
			m, _ := json.Marshal(map[string]any{"event": "media", "sequenceNumber": fmt.Sprint(2 + 2*i + c), "streamSid": "MZ",
				"media": map[string]any{"track": track, "chunk": fmt.Sprint(i + 1), "timestamp": fmt.Sprint(i * 20), "payload": base64.StdEncoding.EncodeToString(payload)}})
			twilioMedia = append(twilioMedia, m)
		}
	}
	legs := [2][]byte{make([]byte, len(data)/2), make([]byte, len(data)/2)}
	for k := range len(data) / 2 {
		legs[0][k], legs[1][k] = data[2*k], data[2*k+1]
	}
	seq := 0
	calls := map[string]func() error{
		"native":    func() error { seq++; return nativeCall(addr, key, fmt.Sprintf("n-%d", seq), data) },
		"audiohook": func() error { return audiohookCall(addr, key, secret, data) },
		"twilio":    func() error { seq++; return twilioCall(addr, key, fmt.Sprintf("t-%d", seq), twilioMedia) },
		"asterisk":  func() error { seq++; return asteriskCall(addr, key, fmt.Sprintf("a-%d", seq), legs) },
	}
	for _, p := range []string{"native", "audiohook", "twilio", "asterisk"} {
		b.Run(p, func(b *testing.B) {
			call := calls[p]
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*seconds), "cpu-µs/audio-s")
			b.ReportMetric(float64(b.N*seconds)/cpu.Seconds(), "audio-s/cpu-s")
		})
	}
}

// readToClose reads until the server closes the connection normally.
func readToClose(ws *websocket.Conn, onText func([]byte)) error {
	for {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				return nil
			}
			return err
		}
		if typ == websocket.TextMessage && onText != nil {
			onText(msg)
		}
	}
}

// audiohookCall plays data as one AudioHook session: a signed request,
// open, 20 ms stereo frames, close.
func audiohookCall(addr, key string, secret, data []byte) error {
	id := audiohookUUID()
	h := http.Header{}
	h.Set(audiohook.HeaderOrganizationID, "d7934305-0972-4844-938e-9060eef73d05")
	h.Set(audiohook.HeaderSessionID, id)
	h.Set(audiohook.HeaderCorrelationID, audiohookUUID())
	h.Set(audiohook.HeaderAPIKey, key)
	audiohook.Sign(h, "/ws/audiohook", addr[len("ws://"):], key, secret, audiohookUUID(), time.Now(), 30*time.Second)
	ws, _, err := websocket.DefaultDialer.Dial(addr+"/ws/audiohook", h)
	if err != nil {
		return err
	}
	defer ws.Close()
	msg := func(typ string, seq, ack int, params string) []byte {
		return []byte(fmt.Sprintf(`{"version":"2","id":%q,"type":%q,"seq":%d,"serverseq":%d,"position":"PT0S","parameters":%s}`, id, typ, seq, ack, params))
	}
	ws.WriteMessage(websocket.TextMessage, msg("open", 1, 0, `{"organizationId":"d7934305-0972-4844-938e-9060eef73d05","conversationId":"`+audiohookUUID()+
		`","participant":{"id":"883efee8-3d6c-4537-b500-6d7ca4b92fa0","ani":"","aniName":"","dnis":""},"media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000}]}`))
	if _, _, err := ws.ReadMessage(); err != nil { // opened
		return err
	}
	for off := 0; off < len(data); off += 320 {
		if err := ws.WriteMessage(websocket.BinaryMessage, data[off:off+320]); err != nil {
			return err
		}
	}
	ws.WriteMessage(websocket.TextMessage, msg("close", 2, 1, `{"reason":"end"}`))
	return readToClose(ws, nil)
}

func audiohookUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// twilioCall plays prebuilt media messages as one Twilio stream.
func twilioCall(addr, key, callID string, media [][]byte) error {
	ws, _, err := websocket.DefaultDialer.Dial(addr+"/ws/twilio", nil)
	if err != nil {
		return err
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"connected","protocol":"Call","version":"1.0.0"}`))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"start","sequenceNumber":"1","start":{"callSid":"`+callID+`","tracks":["inbound","outbound"],`+
		`"customParameters":{"api_key":"`+key+`"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ"}`))
	for _, m := range media {
		if err := ws.WriteMessage(websocket.TextMessage, m); err != nil {
			return err
		}
	}
	ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"event":"stop","sequenceNumber":"%d","streamSid":"MZ"}`, len(media)+2)))
	return readToClose(ws, nil)
}

// asteriskCall plays two legs of 20 ms μ-law frames and hangs both up.
func asteriskCall(addr, key, callID string, legs [2][]byte) error {
	var ws [2]*websocket.Conn
	for i, role := range []string{"caller", "agent"} {
		req := http.Request{Header: http.Header{}}
		req.SetBasicAuth("asterisk", key)
		d := websocket.Dialer{Subprotocols: []string{"media"}}
		c, _, err := d.Dial(addr+"/ws/asterisk?call_id="+callID+"&role="+role, req.Header)
		if err != nil {
			return err
		}
		defer c.Close()
		ws[i] = c
	}
	for i := range ws {
		ws[i].WriteMessage(websocket.TextMessage, []byte("MEDIA_START connection_id:c channel:WebSocket/c/0x1 channel_id:1.1 format:ulaw optimal_frame_size:160 ptime:20"))
	}
	for off := 0; off < len(legs[0]); off += 160 {
		for i := range ws {
			if err := ws[i].WriteMessage(websocket.BinaryMessage, legs[i][off:off+160]); err != nil {
				return err
			}
		}
	}
	for i := range ws {
		ws[i].WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		if err := readToClose(ws[i], nil); err != nil {
			return err
		}
	}
	return nil
}

// nativeCall plays data as one native call: start, 20 ms frames, stop.
func nativeCall(addr, key, callID string, data []byte) error {
	ws, _, err := websocket.DefaultDialer.Dial(addr+"/ws/native", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		return err
	}
	defer ws.Close()
	ws.WriteJSON(map[string]any{"type": "start", "call_id": callID, "codec": "pcmu", "sample_rate": 8000, "channels": []string{"caller", "agent"}})
	for off := 0; off < len(data); off += 320 {
		if err := ws.WriteMessage(websocket.BinaryMessage, data[off:off+320]); err != nil {
			return err
		}
	}
	ws.WriteJSON(map[string]string{"type": "stop"})
	return readToClose(ws, func(msg []byte) {
		var m struct{ Type string }
		json.Unmarshal(msg, &m)
		if m.Type == "stopped" {
			ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		}
	})
}

// benchGateway serves a gateway on loopback in front of scriptable
// backends, with one tenant whose key and AudioHook client secret it
// returns, until the benchmark ends; set adjusts its options. Every call
// dials from one address, so the handshake rate limit is off.
func benchGateway(b *testing.B, set func(*Options)) (addr, key string, secret []byte) {
	rt, fc := gatewaytest.StartRealtime(b), gatewaytest.StartFullcall(b)
	key, secret = tenant.NewKey(), []byte("benchmark client secret")
	reg, err := tenant.NewRegistry([]*tenant.Tenant{{ID: "acme", APIKeys: []tenant.APIKey{{ID: "k", SHA256: tenant.HashKey(key), ClientSecret: secret}}}})
	if err != nil {
		b.Fatal(err)
	}
	o := DefaultOptions()
	o.Tenants, o.RealtimeAddr, o.FullcallAddr, o.DrainTimeout = reg, rt.Addr, fc.Addr, time.Second
	o.Admission.HandshakeRate = -1
	set(&o)
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), lis) }()
	b.Cleanup(func() {
		s.Shutdown(context.Background())
		<-served
	})
	return "ws://" + lis.Addr().String(), key, secret
}
