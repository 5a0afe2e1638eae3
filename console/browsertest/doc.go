// Package browsertest drives the supervisor console in a real headless
// Chromium against a real `calmline serve` (started once, on free ports,
// and shared by the package's tests, which run in parallel tabs), with
// calls streamed by `calmline loadgen`. It holds only tests; it is its own
// package so that `go test` runs it beside the other packages' tests.
//
// The browser is Debian's chromium (scripts/chromium.sh install), found
// through $CALMLINE_CHROMIUM or PATH. Without one the tests skip, unless
// CALMLINE_REQUIRE_CHROMIUM=1 (CI), where that is a failure. Every test
// saves a screenshot under its output directory ($CALMLINE_SCREENSHOTS,
// else the test's temporary directory, logged).
package browsertest
