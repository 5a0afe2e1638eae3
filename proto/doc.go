// Package proto holds calmline's gRPC contracts: the .proto sources under
// calmline/<service>/v1 and the Go code generated from them next to each
// source (regenerate with `make generate`; never edit *.pb.go by hand).
package proto
