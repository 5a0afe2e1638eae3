package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/tlstest"
)

// TestTLSEndToEnd runs calmline serve with TLS on every port and mTLS
// between its services, all from certificate files made here, and plays a
// call over wss://.
func TestTLSEndToEnd(t *testing.T) {
	dir := t.TempDir()
	keys := writeTenants(t, dir, "acme")
	ca := tlstest.NewCA(t, "calmline test CA")
	serverLeaf, clientLeaf := ca.Issue(t, "calmline"), ca.Issue(t, "calmline client")
	server := serverLeaf.WriteFiles(t, dir, "server", ca)
	client := clientLeaf.WriteFiles(t, dir, "client", ca)
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"), "--log-level", "debug",
		"--tls-cert", server.Cert, "--tls-key", server.Key, "--tls-client-ca", server.CA,
		"--backend-ca", client.CA, "--backend-cert", client.Cert, "--backend-key", client.Key)
	srv.waitLine(t, "stream calls to wss://"+srv.addrs["gateway"]+"/ws/native")
	trust := tlstest.ClientConfig(ca, nil)

	// A call over wss://: the gateway reaches realtime and fullcall over
	// mTLS, or there would be no scores and no report.
	b, err := os.ReadFile("testdata/call_emodb_9s.wav")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := audio.ParseWAV(b)
	if err != nil {
		t.Fatal(err)
	}
	dialer := websocket.Dialer{TLSClientConfig: trust, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := dialer.Dial("wss://"+srv.addrs["gateway"]+"/ws/native", http.Header{"Authorization": {"Bearer " + keys["acme"]}})
	if err != nil {
		t.Fatalf("wss dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteJSON(map[string]any{"type": "start", "call_id": "call-tls-1", "codec": rec.Format.Codec.String(),
		"sample_rate": rec.Format.SampleRate, "channels": []string{"caller", "agent"}}); err != nil {
		t.Fatal(err)
	}
	frame := rec.Format.BytesPerSecond() / 50
	tick := time.NewTicker(20 * time.Millisecond)
	for off := 0; off < 2*rec.Format.BytesPerSecond(); off += frame {
		<-tick.C
		if err := ws.WriteMessage(websocket.BinaryMessage, rec.Data[off:off+frame]); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	if err := ws.WriteJSON(map[string]string{"type": "stop"}); err != nil {
		t.Fatal(err)
	}
	scores, reportURL := 0, ""
	for reportURL == "" {
		var m scoreMsg
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("reading the call's messages: %v (%d scores so far)", err, scores)
		}
		switch m.Type {
		case "score":
			scores++
		case "stopped":
			if m.Report == nil {
				t.Fatalf("stopped without a report: %+v", m)
			}
			reportURL = m.Report.URL
		}
	}
	if scores != 2 {
		t.Errorf("%d scores for a 2 s call over wss; want 2", scores)
	}

	// REST over https needs the API key, not a client certificate.
	req, _ := http.NewRequest("GET", "https://"+srv.addrs["fullcall"]+reportURL, nil)
	req.Header.Set("Authorization", "Bearer "+keys["acme"])
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: trust}, Timeout: 10 * time.Second}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var rep struct {
		CallID string `json:"call_id"`
	}
	if res.StatusCode != 200 || json.Unmarshal(body, &rep) != nil || rep.CallID != "call-tls-1" {
		t.Errorf("GET %s over https = %d %s", reportURL, res.StatusCode, body)
	}

	// Cleartext is refused on the TLS port.
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+srv.addrs["gateway"]+"/ws/native", nil); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Errorf("ws:// to the TLS gateway: %v, %v; want a 400", resp, err)
	}

	// gRPC to a backend needs a client certificate from the CA.
	healthOf := func(addr string, conf *tls.Config) error {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := healthOf(srv.addrs["realtime"], trust); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC to realtime without a client certificate: %v; want Unavailable", err)
	}
	withCert := trust.Clone()
	pair, err := tls.LoadX509KeyPair(client.Cert, client.Key)
	if err != nil {
		t.Fatal(err)
	}
	withCert.Certificates = []tls.Certificate{pair}
	if err := healthOf(srv.addrs["realtime"], withCert); err != nil {
		t.Errorf("gRPC to realtime with the client certificate: %v", err)
	}

	// A new certificate is served after SIGHUP, without a restart.
	rotated := ca.Issue(t, "calmline rotated")
	if err := os.WriteFile(server.Cert, rotated.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(server.Key, rotated.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.Dial("tcp", srv.addrs["gateway"], trust)
		if err != nil {
			t.Fatal(err)
		}
		name := c.ConnectionState().PeerCertificates[0].Subject.CommonName
		c.Close()
		if name == "calmline rotated" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway still serves %q 10 s after SIGHUP", name)
		}
	}

	srv.stop(t)
	logs := srv.logs.String()
	if !strings.Contains(logs, "certificates reloaded") || !strings.Contains(logs, "tls handshake failed") {
		t.Errorf("the reload and the refused handshakes were not logged")
	}
	if strings.Contains(logs, "PRIVATE KEY") {
		t.Error("a private key appears in the logs")
	}
	for _, key := range [][]byte{serverLeaf.KeyPEM, clientLeaf.KeyPEM, rotated.KeyPEM} {
		for _, line := range strings.Split(string(key), "\n") {
			if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(logs, line) {
				t.Fatal("a private key appears in the logs")
			}
		}
	}
}
