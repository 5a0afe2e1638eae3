package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

type pkg struct {
	Dir        string
	ImportPath string
	Name       string
	Doc        string
	Deps       []string
	Imports    []string
	GoFiles    []string
}

// list runs go list on every module of the workspace.
func list(t *testing.T) []pkg {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	var all []pkg
	for _, m := range []string{"proto", "lib", "gateway", "realtime", "fullcall", "escalation", "cmd", "console"} {
		cmd := exec.Command("go", "list", "-json", "./...")
		cmd.Dir = filepath.Join(root, m)
		cmd.Env = append(cmd.Environ(), "GOWORK=off")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list in %s: %v", m, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for {
			var p pkg
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			all = append(all, p)
		}
	}
	return all
}

const mod = "github.com/calmline/calmline/"

// The gateway is thin: it never decodes or analyses audio, so it must not
// depend on the analysis packages, nor on the services behind it.
func TestGatewayStaysThin(t *testing.T) {
	forbidden := []string{mod + "lib/voice", mod + "lib/analysis", mod + "realtime", mod + "fullcall", mod + "escalation"}
	for _, p := range list(t) {
		if !strings.HasPrefix(p.ImportPath, mod+"gateway") {
			continue
		}
		for _, d := range p.Deps {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s depends on %s", p.ImportPath, d)
				}
			}
		}
	}
}

// Pure computation stays pure: the audio and analysis packages use no
// gRPC, no logging, no network, no files and no contexts.
func TestAnalysisIsPure(t *testing.T) {
	// Deps, so that nothing comes in indirectly; os only as imported
	// directly, since fmt depends on it.
	impureDeps := []string{"google.golang.org/grpc", "log/slog", "log", "net", "net/http", "context"}
	impureImports := []string{"os"}
	for _, p := range list(t) {
		if !strings.HasPrefix(p.ImportPath, mod+"lib/audio") && !strings.HasPrefix(p.ImportPath, mod+"lib/voice") {
			continue
		}
		if strings.Contains(p.ImportPath, "cli") || strings.Contains(p.ImportPath, "eval") {
			continue // the commands around the analysis may read files
		}
		for _, d := range p.Deps {
			for _, f := range impureDeps {
				if d == f {
					t.Errorf("%s depends on %s", p.ImportPath, d)
				}
			}
		}
		for _, d := range p.Imports {
			for _, f := range impureImports {
				if d == f {
					t.Errorf("%s imports %s", p.ImportPath, d)
				}
			}
		}
	}
}

// Every package says what it provides.
// The console reads the services through their public APIs (the live
// feed, REST) with the signed-in key, so that every rule the services
// apply to a key applies to the console too: it must not link their code.
func TestConsoleUsesOnlyPublicAPIs(t *testing.T) {
	for _, p := range list(t) {
		if !strings.HasPrefix(p.ImportPath, mod+"console") {
			continue
		}
		for _, d := range p.Deps {
			for _, banned := range []string{"gateway", "realtime", "fullcall", "escalation", "lib/voice", "lib/analysis", "lib/sqldb"} {
				if d == mod+banned || strings.HasPrefix(d, mod+banned+"/") {
					t.Errorf("%s depends on %s", p.ImportPath, d)
				}
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range list(t) {
		if len(p.GoFiles) == 0 || strings.HasPrefix(p.ImportPath, mod+"proto/calmline/") {
			continue // generated code documents itself in the .proto files
		}
		if p.Name != "main" && !strings.HasPrefix(p.Doc, "Package "+p.Name+" ") {
			t.Errorf("%s: doc comment %q; want one starting \"Package %s \"", p.ImportPath, p.Doc, p.Name)
		}
		if p.Name == "main" && !strings.HasPrefix(p.Doc, "Command ") {
			t.Errorf("%s: command without a \"Command ...\" doc comment", p.ImportPath)
		}
	}
}
