package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const manifests = "../k8s"

// load reads the real manifests, each file's text by name.
func load(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifests, err)
	}
	texts := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts[filepath.Base(f)] = string(b)
	}
	return texts
}

// validate decodes and checks texts as LoadDir and Check do.
func validate(t *testing.T, texts map[string]string, o Options) []string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range texts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := LoadDir(dir)
	problems := Check(objs, o)
	if err != nil {
		problems = append(problems, err.Error())
	}
	return problems
}

// serveFlagsFixture is calmline serve's flag set as `serve -h` printed it
// when the manifests were written; `make validate-deploy` reads the real
// one from the binary.
const serveFlagsFixture = `Usage of calmline serve:
  -data-dir string
  -drain-timeout duration
  -escalation string
  -escalation-addr string
  -escalation-database string
  -fullcall string
  -fullcall-addr string
  -fullcall-checkpoint-every duration
  -fullcall-database string
  -fullcall-spool-dir string
  -fullcall-workers int
  -delivery-workers int
  -gateway-addr string
  -log-format string
  -pool-size int
  -balancing string
  -realtime string
  -realtime-addr string
  -services string
  -service-secret-file string
  -tenants string
`

func TestManifestsValid(t *testing.T) {
	texts := load(t)
	if p := validate(t, texts, Options{Flags: serveFlags(serveFlagsFixture)}); len(p) > 0 {
		t.Fatalf("the committed manifests have problems:\n%s", strings.Join(p, "\n"))
	}
	// Not vacuous: everything the checks are about was decoded.
	objs, err := LoadDir(manifests)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, o := range objs {
		counts[o.Kind]++
	}
	for kind, want := range map[string]int{"Deployment": 4, "PodDisruptionBudget": 4, "HorizontalPodAutoscaler": 3, "Service": 6} {
		if counts[kind] != want {
			t.Errorf("decoded %d %s objects; want %d", counts[kind], kind, want)
		}
	}
}

// TestBadManifests breaks the real manifests one way at a time; each must
// be caught with a message that says what is wrong.
func TestBadManifests(t *testing.T) {
	for _, c := range []struct {
		name      string
		file      string
		old, new  string
		flags     bool
		wantError string
	}{
		{"unknown field", "20-gateway.yaml",
			"      terminationGracePeriodSeconds: 600\n", "      terminationGracePeriodSeconds: 600\n      terminationGracePeriod: 600\n",
			false, `unknown field "terminationGracePeriod"`},
		{"misspelt probe field", "30-realtime.yaml",
			"          readinessProbe:\n            httpGet:\n              path: /readyz", "          readinessProbe:\n            httpGet:\n              pathname: /readyz",
			false, `unknown field`},
		{"duplicate field", "40-fullcall.yaml",
			"      terminationGracePeriodSeconds: 30\n", "      terminationGracePeriodSeconds: 30\n      terminationGracePeriodSeconds: 31\n",
			false, `key "terminationGracePeriodSeconds" already set`},
		{"wrong type", "50-escalation.yaml",
			"  replicas: 2\n", "  replicas: two\n",
			false, `Deployment`},
		{"bad quantity", "50-escalation.yaml",
			"              memory: 256Mi\n", "              memory: 256MB of RAM\n",
			false, `quantities must match`},
		{"unknown kind", "00-namespace.yaml",
			"kind: Namespace", "kind: Namespaces",
			false, `kind "Namespaces" is not one this validator knows`},
		{"missing readiness probe", "30-realtime.yaml",
			"          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: grpc\n            periodSeconds: 5\n            failureThreshold: 2\n", "",
			false, "container realtime has no readinessProbe"},
		{"liveness on the wrong path", "40-fullcall.yaml",
			"              path: /healthz", "              path: /readyz",
			false, `livenessProbe path "/readyz"; want "/healthz"`},
		{"probe on an undeclared port", "50-escalation.yaml",
			"              path: /healthz\n              port: grpc", "              path: /healthz\n              port: 9999",
			false, "livenessProbe port 9999 is not a containerPort"},
		{"grace shorter than the drain", "20-gateway.yaml",
			"terminationGracePeriodSeconds: 600", "terminationGracePeriodSeconds: 300",
			false, "terminationGracePeriodSeconds 5m0s is shorter than preStop 10s + --drain-timeout 9m0s + shutdown grace 10s = 9m20s"},
		{"longer drain, same grace", "20-gateway.yaml",
			"--drain-timeout=540s", "--drain-timeout=1h",
			false, "calls would be killed, not drained"},
		{"gateway without preStop", "20-gateway.yaml",
			"              sleep:\n                seconds: 10\n", "              sleep:\n                seconds: 0\n",
			false, "the gateway needs a preStop delay"},
		{"backend grace too short", "30-realtime.yaml",
			"terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 5",
			false, "shorter than preStop 0s + stop 15s"},
		{"no PDB", "40-fullcall.yaml",
			"  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: fullcall", "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: fullcall-old",
			false, "Deployment calmline/fullcall (40-fullcall.yaml#1): no PodDisruptionBudget selects its pods"},
		{"HPA on cpu only", "30-realtime.yaml",
			"          name: calmline_realtime_calls_active", "          name: calmline_realtime_cpu",
			false, "HorizontalPodAutoscaler realtime does not scale on calmline_realtime_calls_active"},
		{"HPA of one replica", "20-gateway.yaml",
			"  minReplicas: 2", "  minReplicas: 1",
			false, "minReplicas must be at least 2"},
		{"backend behind a ClusterIP", "30-realtime.yaml",
			"  clusterIP: None\n", "",
			false, "Service realtime-headless is not headless"},
		{"backend by host:port", "20-gateway.yaml",
			"--fullcall=dns:///fullcall-headless.calmline.svc.cluster.local:9092", "--fullcall=fullcall-headless.calmline.svc.cluster.local:9092",
			false, "--fullcall=fullcall-headless.calmline.svc.cluster.local:9092: use dns:///"},
		{"backend on the wrong port", "20-gateway.yaml",
			"realtime-headless.calmline.svc.cluster.local:9090", "realtime-headless.calmline.svc.cluster.local:9091",
			false, "Service realtime-headless has no port 9091"},
		{"backend Service of another namespace", "20-gateway.yaml",
			"realtime-headless.calmline.svc", "realtime-headless.default.svc",
			false, "no Service default/realtime-headless"},
		{"gateway without its fullcall", "20-gateway.yaml",
			"            - --fullcall=dns:///fullcall-headless.calmline.svc.cluster.local:9092\n", "",
			false, "gateway needs --fullcall"},
		{"no cpu request", "40-fullcall.yaml",
			"              cpu: \"2\"\n              memory: 2Gi", "              memory: 2Gi",
			false, "no cpu request"},
		{"writable root", "50-escalation.yaml",
			"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
			false, "readOnlyRootFilesystem must be true"},
		{"root allowed", "30-realtime.yaml",
			"        runAsNonRoot: true", "        runAsNonRoot: false",
			false, "runAsNonRoot: true"},
		{"listening on loopback", "30-realtime.yaml",
			"--realtime-addr=0.0.0.0:9090", "--realtime-addr=127.0.0.1:9090",
			false, "must listen on all interfaces"},
		{"listening on an undeclared port", "30-realtime.yaml",
			"--realtime-addr=0.0.0.0:9090", "--realtime-addr=0.0.0.0:9091",
			false, "--realtime-addr port 9091 is not a containerPort"},
		{"a flag serve does not have", "40-fullcall.yaml",
			"--fullcall-workers=2", "--fullcall-worker=2",
			true, "--fullcall-worker is not a flag of calmline serve"},
		{"undefined env reference", "40-fullcall.yaml",
			"--fullcall-database=$(DATABASE_URL)", "--fullcall-database=$(DATABASE_DSN)",
			false, "refers to $(DATABASE_DSN), which the container's env does not define"},
		{"missing secret key", "50-escalation.yaml",
			"                  key: password", "                  key: pass",
			false, `Secret calmline-database has no key "pass"`},
		{"tenants by subPath", "20-gateway.yaml",
			"              mountPath: /etc/calmline/tenants\n", "              mountPath: /etc/calmline/tenants/tenants.yaml\n              subPath: tenants.yaml\n",
			false, "subPath: a ConfigMap mounted with subPath is never updated"},
		{"two services in one pod", "50-escalation.yaml",
			"--services=escalation", "--services=escalation,fullcall",
			false, "want exactly one of"},
		{"no escalation at all", "50-escalation.yaml",
			"--services=escalation", "--services=fullcall",
			false, "no Deployment runs calmline serve --services=escalation"},
		{"pods scraped twice", "40-fullcall.yaml",
			"  name: fullcall\n  namespace: calmline\n  labels:\n", "  name: fullcall\n  namespace: calmline\n  labels:\n    calmline.io/metrics: \"true\"\n",
			false, "the fullcall pods are scraped 2 times"},
		{"pods not scraped", "30-realtime.yaml",
			"    calmline.io/metrics: \"true\"\n", "",
			false, "no ServiceMonitor endpoint scrapes the realtime pods"},
		{"servicemonitor unknown field", "80-servicemonitor.yaml",
			"      interval: 30s\n", "      intervall: 30s\n",
			false, `unknown field "intervall"`},
		{"servicemonitor wrong path", "80-servicemonitor.yaml",
			"    - port: grpc\n      path: /metrics", "    - port: grpc\n      path: /metric",
			false, `endpoint path "/metric"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			texts := load(t)
			text, ok := texts[c.file]
			if !ok || !strings.Contains(text, c.old) {
				t.Fatalf("%s does not contain %q: fix the test case", c.file, c.old)
			}
			texts[c.file] = strings.Replace(text, c.old, c.new, 1)
			var o Options
			if c.flags {
				o.Flags = serveFlags(serveFlagsFixture)
			}
			problems := validate(t, texts, o)
			for _, p := range problems {
				if strings.Contains(p, c.wantError) {
					return
				}
			}
			t.Errorf("problems = %q; want one containing %q", problems, c.wantError)
		})
	}
}

func TestRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{manifests}, &stdout, &stderr); code != 0 {
		t.Fatalf("run = %d; stderr:\n%s", code, stderr.String())
	}
	if want := "30 objects decoded strictly"; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout = %q; want it to contain %q", stdout.String(), want)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: calmline}\ndata: {a: b}\nextra: 1\n"), 0o644)
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{dir}, &stdout, &stderr); code != 1 {
		t.Errorf("run on a bad manifest = %d; want 1", code)
	}
	if !strings.Contains(stderr.String(), `unknown field "extra"`) {
		t.Errorf("stderr = %q; want the unknown field named", stderr.String())
	}
	if code := run(nil, &stdout, &stderr); code != 2 {
		t.Errorf("run without a directory = %d; want 2", code)
	}
}
