package fullcall

import (
	"context"
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calmline/calmline/lib/audio"
	"github.com/calmline/calmline/lib/service"
)

// Errors of the recording paths, classified at the API boundary (and as
// the error code of a failed job).
var (
	errNoSpeech    = errors.New("the recording contains no speech")
	errBadRoles    = errors.New("bad roles")
	errTooLarge    = errors.New("recording too large")
	errBadCallback = errors.New("bad callback_url")
	errStore       = errors.New("store unavailable")
	errQueueFull   = errors.New("the tenant's job queue is full")
	errBadField    = errors.New("bad field")
)

var reasonAttr = attribute.Key("reason")

// recordingErrors maps each error to its REST status, stable code and gRPC
// code; the first that matches wins.
var recordingErrors = []struct {
	err    error
	status int
	code   string
	grpc   codes.Code
}{
	{audio.ErrNotWAV, http.StatusUnsupportedMediaType, "unsupported_format", codes.InvalidArgument},
	{audio.ErrUnsupported, http.StatusUnsupportedMediaType, "unsupported_format", codes.InvalidArgument},
	{audio.ErrTruncated, http.StatusBadRequest, "malformed_wav", codes.InvalidArgument},
	{audio.ErrBadHeader, http.StatusBadRequest, "malformed_wav", codes.InvalidArgument},
	{audio.ErrNoAudio, http.StatusUnprocessableEntity, "no_audio", codes.InvalidArgument},
	{errNoSpeech, http.StatusUnprocessableEntity, "no_speech", codes.InvalidArgument},
	{errBadRoles, http.StatusBadRequest, "bad_roles", codes.InvalidArgument},
	{errBadField, http.StatusBadRequest, "bad_request", codes.InvalidArgument},
	{errTooLarge, http.StatusRequestEntityTooLarge, "too_large", codes.ResourceExhausted},
	{errBadCallback, http.StatusBadRequest, "bad_callback_url", codes.InvalidArgument},
	{errBadSidecar, http.StatusBadRequest, "bad_sidecar", codes.InvalidArgument},
	{errQueueFull, http.StatusTooManyRequests, "queue_full", codes.ResourceExhausted},
	{errStore, http.StatusServiceUnavailable, "unavailable", codes.Unavailable},
	{context.Canceled, 499, "canceled", codes.Canceled},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", codes.DeadlineExceeded},
}

func classify(err error) (int, string, codes.Code) {
	for _, e := range recordingErrors {
		if errors.Is(err, e.err) {
			return e.status, e.code, e.grpc
		}
	}
	return http.StatusBadRequest, "bad_request", codes.InvalidArgument
}

// errorCode is the stable code of a recording error.
func errorCode(err error) string {
	_, code, _ := classify(err)
	return code
}

func writeRecordingError(w http.ResponseWriter, err error) {
	st, code, _ := classify(err)
	msg := err.Error()
	if code == "unavailable" {
		msg = "the store is unavailable"
	}
	service.WriteError(w, st, code, msg)
}

func grpcError(err error) error {
	_, _, c := classify(err)
	return status.Error(c, err.Error())
}
