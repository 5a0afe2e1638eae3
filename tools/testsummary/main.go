// Command testsummary reads `go test -json` on standard input and prints
// what plain `go test` prints — each package's closing line (ok, FAIL,
// "no test files"), build errors, and the whole output of every test that
// failed — and records the tests that were skipped, with the reason each
// gave. `make test-go` pipes every module's run through it and, at the
// end, prints the skipped tests of the whole suite:
//
//	go test -json ./... | testsummary -skips FILE   # exit status 1 if anything failed
//	testsummary -report FILE                         # the skipped tests, and why
//
// It keeps go test's own lines as they are, so that whatever reads them
// (CI looks for ^ok and ^FAIL) still finds them.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
}

// skip is a skipped test and the reason it logged.
type skip struct {
	Package string `json:"package"`
	Test    string `json:"test"`
	Reason  string `json:"reason"`
}

func main() {
	skips := flag.String("skips", "", "append the skipped tests to this file (JSON lines)")
	report := flag.String("report", "", "print the skipped tests recorded in this file and exit")
	flag.Parse()
	if *report != "" {
		if err := printReport(os.Stdout, *report); err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(2)
		}
		return
	}
	failed, skipped, err := summarise(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if *skips != "" && len(skipped) > 0 {
		if err := appendSkips(*skips, skipped); err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(2)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// summarise copies what plain go test would print from the JSON events in
// r to w, and returns whether anything failed and what was skipped. Lines
// that are not JSON (go test's own errors before it runs anything) are
// copied as they are.
func summarise(r io.Reader, w io.Writer) (failed bool, skipped []skip, err error) {
	out := map[string][]string{} // package + test -> its output so far
	key := func(e event) string { return e.Package + "\x00" + e.Test }
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		switch {
		case e.Action == "build-output":
			io.WriteString(w, e.Output)
		case e.Action == "build-fail":
			failed = true
		case e.Test == "" && e.Action == "output":
			// The package's own lines: ok/FAIL/"no test files", panics
			// and timeouts outside any test, coverage.
			if o := e.Output; o != "PASS\n" && !strings.HasPrefix(o, "=== ") {
				if strings.HasPrefix(o, "FAIL") {
					unfinished(w, out, e.Package)
				}
				io.WriteString(w, o)
			}
		case e.Test == "" && e.Action == "fail":
			failed = true
			unfinished(w, out, e.Package)
		case e.Action == "output":
			out[key(e)] = append(out[key(e)], e.Output)
		case e.Action == "fail":
			failed = true
			for _, o := range out[key(e)] {
				if !strings.HasPrefix(o, "=== ") {
					io.WriteString(w, o)
				}
			}
			delete(out, key(e))
		case e.Action == "skip" && e.Test == "":
			// A package without tests; its "?" line is already out.
		case e.Action == "skip":
			skipped = append(skipped, skip{Package: e.Package, Test: e.Test, Reason: reason(out[key(e)])})
			delete(out, key(e))
		case e.Action == "pass":
			delete(out, key(e))
		}
	}
	return failed, skipped, sc.Err()
}

// unfinished prints the output of pkg's tests that never ended: a test
// binary that panicked or timed out dies inside a test, and test2json sends
// no "fail" for that test, only for the package — its output (the panic and
// its stack) is what the reader needs most. Tests in name order.
func unfinished(w io.Writer, out map[string][]string, pkg string) {
	var keys []string
	for k := range out {
		if strings.HasPrefix(k, pkg+"\x00") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, o := range out[k] {
			io.WriteString(w, o)
		}
		delete(out, k)
	}
}

// reason is what a skipped test logged, without go test's framing lines.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}

func appendSkips(path string, skipped []skip) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, s := range skipped {
		if err := enc.Encode(s); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// printReport prints the skipped tests recorded in path, by package; a
// missing file means nothing was skipped.
func printReport(w io.Writer, path string) error {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		fmt.Fprintln(w, "== skipped tests: none")
		return nil
	}
	if err != nil {
		return err
	}
	var all []skip
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var s skip
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		all = append(all, s)
	}
	if len(all) == 0 {
		fmt.Fprintln(w, "== skipped tests: none")
		return nil
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Package != all[j].Package {
			return all[i].Package < all[j].Package
		}
		return all[i].Test < all[j].Test
	})
	fmt.Fprintf(w, "== skipped tests: %d\n", len(all))
	for _, s := range all {
		fmt.Fprintf(w, "SKIP %s %s: %s\n", s.Package, s.Test, s.Reason)
	}
	return nil
}
