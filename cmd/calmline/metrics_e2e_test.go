package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// documentedMetric is one row of docs/metrics.md.
type documentedMetric struct {
	service, name, typ string
	labels             []string
	fromStart          bool
}

var (
	docSection = regexp.MustCompile(`^## (\w[\w ]*)$`)
	docRow     = regexp.MustCompile("^\\| `([a-z_*, `]+)` \\|\\s*([a-z]*)\\s*\\|\\s*([a-z_, ]*?)\\s*\\|[^|]*\\|\\s*(yes|first use)\\s*\\|")
)

// readMetricsDoc parses docs/metrics.md's tables.
func readMetricsDoc(t *testing.T) []documentedMetric {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []documentedMetric
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := docSection.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		m := docRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d := documentedMetric{service: section, name: m[1], typ: m[2], fromStart: m[4] == "yes"}
		for _, l := range strings.Split(m[3], ",") {
			if l = strings.TrimSpace(l); l != "" {
				d.labels = append(d.labels, l)
			}
		}
		out = append(out, d)
	}
	if len(out) < 50 {
		t.Fatalf("read %d rows from docs/metrics.md; the table format changed?", len(out))
	}
	return out
}

// exposedFamily is a metric family a port exposes.
type exposedFamily struct {
	typ    string
	labels map[string]bool
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? `)
var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

// scrape reads a /metrics page into its families.
func scrape(t *testing.T, addr string) map[string]*exposedFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*exposedFamily{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = &exposedFamily{typ: f[3], labels: map[string]bool{}}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		fam := fams[name]
		for _, suffix := range []string{"_bucket", "_sum", "_count", "_created"} {
			if fam == nil {
				fam = fams[strings.TrimSuffix(name, suffix)]
			}
		}
		if fam == nil {
			t.Errorf("%s: sample %q without a TYPE", addr, line)
			continue
		}
		for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
			if l[1] != "le" {
				fam.labels[l[1]] = true
			}
		}
	}
	return fams
}

// TestMetricsDocumented scrapes every port of a fresh `calmline serve`
// and checks docs/metrics.md against what is exposed, both ways: every
// series documented as existing from the start is on its service's port,
// with no label the page does not name; everything exposed is documented;
// no series is on two ports; the process's own series are on exactly one.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel() // its own calmline serve on free ports: it waits alongside the others
	dir := t.TempDir()
	writeTenants(t, dir, "acme", "globex")
	srv := startServe(t, "--data-dir", dir, "--tenants", filepath.Join(dir, "tenants.yaml"), "--console-addr", "127.0.0.1:0")
	_, consoleAddr, _ := strings.Cut(srv.waitLine(t, "calmline: ready service=console "), " addr=")
	doc := readMetricsDoc(t)
	seenOn := map[string][]string{}
	for _, svc := range []string{"gateway", "realtime", "fullcall", "escalation", "console"} {
		addr := srv.addrs[svc]
		if svc == "console" {
			addr = consoleAddr
		}
		fams := scrape(t, addr)
		documented := map[string]documentedMetric{}
		for _, d := range doc {
			if d.service == svc || d.service == "Every port" {
				documented[d.name] = d
			}
		}
		for name, fam := range fams {
			if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
				if !slices.Contains(seenOn["go_*"], svc) {
					seenOn["go_*"] = append(seenOn["go_*"], svc)
				}
				continue
			}
			d, ok := documented[name]
			if !ok {
				t.Errorf("%s exposes %s (%s), which docs/metrics.md does not list under %s", svc, name, fam.typ, svc)
				continue
			}
			if d.typ != fam.typ {
				t.Errorf("%s: %s is a %s; docs/metrics.md says %s", svc, name, fam.typ, d.typ)
			}
			for l := range fam.labels {
				if !slices.Contains(d.labels, l) {
					t.Errorf("%s: %s has label %q; docs/metrics.md lists %v", svc, name, l, d.labels)
				}
			}
			if name != "target_info" {
				seenOn[name] = append(seenOn[name], svc)
			}
		}
		for name, d := range documented {
			if d.fromStart && !strings.Contains(name, "*") && fams[name] == nil {
				t.Errorf("%s: %s is documented as present from the start but is not exposed", svc, name)
			}
		}
	}
	for name, on := range seenOn {
		if len(on) != 1 && !strings.HasPrefix(name, "rpc_") {
			t.Errorf("%s is exposed on %v; want one port", name, on)
		}
	}
	if on := seenOn["go_*"]; len(on) != 1 || on[0] != "gateway" {
		t.Errorf("the process's own series (go_*, process_*) are on %v; want the gateway's port only", on)
	}
}
