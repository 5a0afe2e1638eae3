// Package arch holds tests that enforce calmline's architecture across the
// workspace: what may import what, and that every package says what it is.
package arch
