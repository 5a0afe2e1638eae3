package service

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// ALPN protocol names the TLS listener offers: the protocol a connection
// negotiates decides where it goes, since after the handshake the bytes
// can no longer be sniffed.
const (
	alpnGRPC = "h2"
	alpnHTTP = "http/1.1"
)

// errGRPCNeedsClientCert refuses a gRPC connection without a verified
// client certificate on a listener that has client CAs.
var errGRPCNeedsClientCert = errors.New("service: gRPC on this listener needs a client certificate signed by its client CA")

// serverTLS returns the listener's TLS configuration: c with ALPN set to
// http/1.1 (REST, WebSocket, health) and h2 (gRPC). When c has ClientCAs
// but does not require a certificate of every client, gRPC connections
// must still present one: calls between services are mutually
// authenticated, while HTTP clients (PBX WebSockets, REST with API keys)
// may connect without one. A certificate that is presented is always
// verified.
func serverTLS(c *tls.Config) *tls.Config {
	c = c.Clone()
	// The server's preference decides: http/1.1 first, so a client that
	// offers both (curl, browsers, REST libraries) gets HTTP/1.1 and our
	// REST and WebSocket routes, while gRPC clients, which offer h2 alone,
	// get gRPC. With h2 first, curl https://… would reach the gRPC
	// server and get 415.
	c.NextProtos = []string{alpnHTTP, alpnGRPC}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ClientCAs != nil && c.ClientAuth < tls.RequireAndVerifyClientCert {
		if c.ClientAuth != tls.VerifyClientCertIfGiven {
			c.ClientAuth = tls.VerifyClientCertIfGiven
		}
		next := c.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol == alpnGRPC && len(cs.VerifiedChains) == 0 {
				return errGRPCNeedsClientCert
			}
			if next != nil {
				return next(cs)
			}
			return nil
		}
	}
	return c
}

// isGRPC reports whether a finished TLS handshake chose gRPC.
func isGRPC(cs tls.ConnectionState) bool {
	return cs.NegotiatedProtocol == alpnGRPC
}

// handshakenTLS is the gRPC server's transport credentials on a TLS
// listener: the port mux has already done the handshake (it had to, to read
// ALPN), so this only reports the connection's TLS state, which handlers
// read through peer.FromContext and credentials.TLSInfo.
type handshakenTLS struct{}

func (handshakenTLS) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, errors.New("service: a cleartext connection reached the TLS gRPC server")
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (handshakenTLS) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("service: server-only credentials")
}

func (handshakenTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (handshakenTLS) Clone() credentials.TransportCredentials { return handshakenTLS{} }

func (handshakenTLS) OverrideServerName(string) error { return nil }
