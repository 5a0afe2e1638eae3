package service

import (
	"encoding/json"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// ProtoJSON is how calmline's REST APIs render protobuf messages:
// snake_case field names as in the .proto files, and zero values included so
// that a count of 0 reads as 0 rather than as a missing field.
var ProtoJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// WriteJSON writes v as a JSON response. Protobuf messages are rendered
// with ProtoJSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if m, ok := v.(proto.Message); ok {
		b, err := ProtoJSON.Marshal(m)
		if err != nil {
			WriteError(w, http.StatusInternalServerError, "internal", "encoding the response failed")
			return
		}
		w.WriteHeader(status)
		w.Write(append(b, '\n'))
		return
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// APIError is the body of every REST error response.
type APIError struct {
	Error struct {
		// Code is a stable machine-readable reason ("not_found",
		// "unsupported_format", ...).
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteError writes an APIError.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	var e APIError
	e.Error.Code, e.Error.Message = code, message
	WriteJSON(w, status, e)
}
