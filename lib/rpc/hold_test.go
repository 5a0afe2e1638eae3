package rpc

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The hold service is a bidirectional stream for tests, standing in for a
// call's stream to realtime or fullcall: the server echoes every message
// back until the client ends the stream, so a test can tell whether a
// stream still works and which backend carries it. Its messages are health
// requests, to need no generated code of its own.
const holdMethod = "/calmline.test.Hold/Hold"

var holdStreamDesc = grpc.StreamDesc{StreamName: "Hold", ServerStreams: true, ClientStreams: true}

// holdServiceDesc registers the hold service; opened, when not nil, is
// called with each stream's context when it opens.
func holdServiceDesc(opened func(context.Context)) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "calmline.test.Hold",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Hold",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(_ any, s grpc.ServerStream) error {
				if opened != nil {
					opened(s.Context())
				}
				for {
					var m healthpb.HealthCheckRequest
					if err := s.RecvMsg(&m); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
					if err := s.SendMsg(&m); err != nil {
						return err
					}
				}
			},
		}},
	}
}

// holdStream is the client side of a hold stream.
type holdStream struct {
	grpc.ClientStream
	backend string // the address of the backend carrying it
}

func openHold(ctx context.Context, cc grpc.ClientConnInterface) (*holdStream, error) {
	s, err := cc.NewStream(ctx, &holdStreamDesc, holdMethod)
	if err != nil {
		return nil, err
	}
	// A round trip makes sure the stream reached its backend.
	if err := (&holdStream{ClientStream: s}).echo("open"); err != nil {
		return nil, err
	}
	p, _ := peer.FromContext(s.Context())
	return &holdStream{ClientStream: s, backend: p.Addr.String()}, nil
}

// echo sends one message and waits for it to come back.
func (s *holdStream) echo(text string) error {
	if err := s.SendMsg(&healthpb.HealthCheckRequest{Service: text}); err != nil {
		return err
	}
	var m healthpb.HealthCheckRequest
	if err := s.RecvMsg(&m); err != nil {
		return err
	}
	if m.Service != text {
		return errors.New("hold: echo mismatch")
	}
	return nil
}
