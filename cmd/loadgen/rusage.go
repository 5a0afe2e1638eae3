package loadgen

import "syscall"

type usage struct {
	user, system float64 // seconds
	maxRSSKiB    int64
}

// rusage reads the process's own CPU time and peak memory.
func rusage() usage {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return usage{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return usage{user: tv(ru.Utime), system: tv(ru.Stime), maxRSSKiB: int64(ru.Maxrss)}
}
