//go:build !unix

package voice

// cpuSeconds is not available here; benchmarks report wall time only.
func cpuSeconds() float64 { return 0 }
