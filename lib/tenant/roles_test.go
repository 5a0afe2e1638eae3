package tenant

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestRoleTableInDocs keeps docs/configuration.md showing the table the
// code enforces.
func TestRoleTableInDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := RoleTableMarkdown(); !strings.Contains(string(doc), want) {
		t.Errorf("docs/configuration.md does not contain the role table; paste:\n%s", want)
	}
}

func TestRoleTable(t *testing.T) {
	// The properties the issue asks for, independent of the table's text.
	for _, a := range Actions {
		if Access(KeyRoleGeneral, a) == ScopeNone && a != ActionReadPrivateAgentScores {
			t.Errorf("the full key may not %s", a)
		}
		if Access(KeyRoleAgent, a) == ScopeTenant {
			t.Errorf("an agent key reaches the whole tenant for %s", a)
		}
		if Access("nonsense", a) != ScopeNone {
			t.Errorf("an unknown role may %s", a)
		}
	}
	for _, r := range []string{KeyRoleSupervisor, KeyRoleCare, KeyRoleAgent} {
		for _, a := range []Action{ActionStreamCalls, ActionSubmitRecordings, ActionRedriveDeliveries, ActionReadReportAudio, ActionReadJobs} {
			if Allows(r, a) {
				t.Errorf("role %q may %s", r, a)
			}
		}
	}
	if Allows(KeyRoleGeneral, ActionReadPrivateAgentScores) || Allows(KeyRoleSupervisor, ActionReadPrivateAgentScores) {
		t.Error("private agent scores are for the agent and the care team only")
	}
	for role := range roleTable {
		if !validRole(role) {
			t.Errorf("table has role %q that Roles does not list", role)
		}
		for a := range roleTable[role] {
			found := false
			for _, b := range Actions {
				found = found || a == b
			}
			if !found {
				t.Errorf("table has action %q that Actions does not list", a)
			}
		}
	}
}

func TestKeyAccess(t *testing.T) {
	agent := &APIKey{ID: "a", Role: KeyRoleAgent, AgentID: "agent-1"}
	if !agent.MaySee(ActionReadReports, "agent-1") || agent.MaySee(ActionReadReports, "agent-2") || agent.MaySee(ActionReadReports, "") {
		t.Error("agent key: own calls only")
	}
	if err := agent.Authorize(ActionSubmitRecordings); !errors.Is(err, ErrForbidden) {
		t.Errorf("agent uploading: got %v; want ErrForbidden", err)
	}
	sup := &APIKey{ID: "s", Role: KeyRoleSupervisor}
	if !sup.MaySee(ActionReadReports, "agent-2") {
		t.Error("supervisor reads every agent's reports")
	}
	for _, c := range []struct {
		key  *APIKey
		mode string
		want bool
	}{
		{sup, AgentScoringOn, true}, {sup, AgentScoringPrivate, false}, {sup, AgentScoringOff, false},
		{agent, AgentScoringPrivate, true}, {&APIKey{Role: KeyRoleCare}, AgentScoringPrivate, true},
		{&APIKey{}, AgentScoringPrivate, false},
	} {
		if got := c.key.SeesAgentScores(&Tenant{AgentScoring: c.mode}); got != c.want {
			t.Errorf("role %q in mode %s sees agent scores: got %v; want %v", c.key.Role, c.mode, got, c.want)
		}
	}
}

func TestParseSupervisorRole(t *testing.T) {
	ts, err := Parse([]byte("tenants:\n- id: acme\n  api_keys:\n  - id: sup\n    sha256: " + HashKey("k") + "\n    role: supervisor\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ts[0].APIKeys[0].Role != KeyRoleSupervisor {
		t.Errorf("role: got %q", ts[0].APIKeys[0].Role)
	}
	if _, err := Parse([]byte("tenants:\n- id: acme\n  api_keys:\n  - id: x\n    sha256: " + HashKey("k") + "\n    role: admin\n")); err == nil || !strings.Contains(err.Error(), "want supervisor, care, agent or none") {
		t.Errorf("role admin: got %v", err)
	}
}
