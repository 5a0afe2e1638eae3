// Package tools pins the versions of the code generators and linters the
// Makefile runs (buf, protoc-gen-go, protoc-gen-go-grpc, staticcheck). They
// are declared as tool dependencies in go.mod and built into bin/tools.
package tools
