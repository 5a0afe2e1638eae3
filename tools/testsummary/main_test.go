package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// stream is what `go test -json` prints for a module with a passing, a
// failing and a skipped test, a package without tests, and a package that
// does not build.
const stream = `{"Action":"start","Package":"m/a"}
{"Action":"run","Package":"m/a","Test":"TestPass"}
{"Action":"output","Package":"m/a","Test":"TestPass","Output":"=== RUN   TestPass\n"}
{"Action":"output","Package":"m/a","Test":"TestPass","Output":"--- PASS: TestPass (0.00s)\n"}
{"Action":"pass","Package":"m/a","Test":"TestPass"}
{"Action":"run","Package":"m/a","Test":"TestFail"}
{"Action":"output","Package":"m/a","Test":"TestFail","Output":"=== RUN   TestFail\n"}
{"Action":"output","Package":"m/a","Test":"TestFail","Output":"    a_test.go:9: got 1; want 2\n"}
{"Action":"output","Package":"m/a","Test":"TestFail","Output":"--- FAIL: TestFail (0.00s)\n"}
{"Action":"fail","Package":"m/a","Test":"TestFail"}
{"Action":"run","Package":"m/a","Test":"TestPostgres"}
{"Action":"output","Package":"m/a","Test":"TestPostgres","Output":"=== RUN   TestPostgres\n"}
{"Action":"output","Package":"m/a","Test":"TestPostgres","Output":"    a_test.go:20: PostgreSQL not available: initdb not found\n"}
{"Action":"output","Package":"m/a","Test":"TestPostgres","Output":"--- SKIP: TestPostgres (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestPostgres"}
{"Action":"output","Package":"m/a","Output":"FAIL\n"}
{"Action":"output","Package":"m/a","Output":"FAIL\tm/a\t0.012s\n"}
{"Action":"fail","Package":"m/a"}
{"Action":"output","Package":"m/b","Output":"?   \tm/b\t[no test files]\n"}
{"Action":"skip","Package":"m/b"}
{"ImportPath":"m/c","Action":"build-output","Output":"# m/c\n"}
{"ImportPath":"m/c","Action":"build-output","Output":"c/c.go:3:1: syntax error\n"}
{"ImportPath":"m/c","Action":"build-fail"}
{"Action":"output","Package":"m/d","Output":"ok  \tm/d\t0.5s\n"}
{"Action":"pass","Package":"m/d"}
`

func TestSummariseKeepsGoTestsLinesAndRecordsSkips(t *testing.T) {
	var out bytes.Buffer
	failed, skipped, err := summarise(strings.NewReader(stream), &out)
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Error("a failing test and a build failure: failed = false")
	}
	got := out.String()
	for _, want := range []string{"    a_test.go:9: got 1; want 2\n", "--- FAIL: TestFail", "FAIL\tm/a\t0.012s\n",
		"?   \tm/b\t[no test files]\n", "c/c.go:3:1: syntax error\n", "ok  \tm/d\t0.5s\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, never := range []string{"TestPass", "=== RUN", "PostgreSQL"} {
		if strings.Contains(got, never) {
			t.Errorf("output shows %q, which plain go test would not:\n%s", never, got)
		}
	}
	if len(skipped) != 1 || skipped[0].Test != "TestPostgres" || skipped[0].Reason != "a_test.go:20: PostgreSQL not available: initdb not found" {
		t.Errorf("skipped = %+v; want TestPostgres with its reason", skipped)
	}

	file := filepath.Join(t.TempDir(), "skips")
	if err := appendSkips(file, skipped); err != nil {
		t.Fatal(err)
	}
	if err := appendSkips(file, []skip{{Package: "m/e", Test: "TestE", Reason: "no corpus"}}); err != nil {
		t.Fatal(err)
	}
	var rep bytes.Buffer
	if err := printReport(&rep, file); err != nil {
		t.Fatal(err)
	}
	want := "== skipped tests: 2\nSKIP m/a TestPostgres: a_test.go:20: PostgreSQL not available: initdb not found\nSKIP m/e TestE: no corpus\n"
	if rep.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", rep.String(), want)
	}
}

func TestPassingRunIsNotAFailureAndNoSkipsSaysNone(t *testing.T) {
	in := "{\"Action\":\"output\",\"Package\":\"m/d\",\"Output\":\"ok  \\tm/d\\t0.5s\\n\"}\n{\"Action\":\"pass\",\"Package\":\"m/d\"}\n"
	var out bytes.Buffer
	failed, skipped, err := summarise(strings.NewReader(in), &out)
	if err != nil || failed || len(skipped) != 0 {
		t.Errorf("passing run: failed %v, skipped %v, err %v", failed, skipped, err)
	}
	var rep bytes.Buffer
	if err := printReport(&rep, filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Fatal(err)
	}
	if rep.String() != "== skipped tests: none\n" {
		t.Errorf("report without skips: %q", rep.String())
	}
}

// A test binary that panics dies inside the test: test2json sends no "fail"
// for the test, only for the package. The panic and the test's output must
// still be printed, before the package's FAIL line.
func TestAPanicInsideATestIsPrinted(t *testing.T) {
	const panicked = `{"Action":"start","Package":"m/s"}
{"Action":"run","Package":"m/s","Test":"TestWalk"}
{"Action":"output","Package":"m/s","Test":"TestWalk","Output":"=== RUN   TestWalk\n"}
{"Action":"output","Package":"m/s","Test":"TestWalk","Output":"panic: runtime error: invalid memory address or nil pointer dereference\n"}
{"Action":"output","Package":"m/s","Test":"TestWalk","Output":"\tm/s/api.go:419 +0xd0\n"}
{"Action":"output","Package":"m/s","Output":"FAIL\tm/s\t1.666s\n"}
{"Action":"fail","Package":"m/s","Elapsed":1.666}
`
	var out bytes.Buffer
	failed, _, err := summarise(strings.NewReader(panicked), &out)
	if err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Error("a panicking package: failed = false")
	}
	got := out.String()
	p, f := strings.Index(got, "panic: runtime error"), strings.Index(got, "FAIL\tm/s")
	if p < 0 || !strings.Contains(got, "m/s/api.go:419") || f < 0 || p > f {
		t.Errorf("want the panic and its stack before the package's FAIL line, got:\n%s", got)
	}
}
