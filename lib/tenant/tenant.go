// Package tenant loads calmline's tenants file: who the tenants are, their
// API keys (stored only as SHA-256 hashes), their contracted concurrent-call
// limits and their settings. A Registry answers "whose key is this?" and can
// be reloaded while the services run.
package tenant

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/calmline/calmline/lib/field"
)

// AgentScoring values: the tenant's privacy mode for agent-side scores.
const (
	AgentScoringOn      = "on"      // computed and shown wherever scores are shown
	AgentScoringOff     = "off"     // never computed
	AgentScoringPrivate = "private" // shown only to the agent and the care team
)

// Score names.
const (
	ScoreCallerPressure = "caller_pressure"
	ScoreAgentStress    = "agent_stress"
)

// Tenant is one tenant's configuration. A Tenant value is never modified
// after loading; a reload builds new ones.
type Tenant struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
	// APIKeys lists the tenant's keys; several let a key be rotated
	// without downtime.
	APIKeys []APIKey `yaml:"api_keys"`
	// MaxConcurrentCalls is the contracted limit of live calls; 0 means
	// no limit.
	MaxConcurrentCalls int `yaml:"max_concurrent_calls"`
	// AlertRule applies to every call of the tenant. A tenant with
	// neither it nor AlertRules gets DefaultAlertRule; one with only
	// AlertRules has no rule for every call.
	AlertRule AlertRule `yaml:"alert_rule"`
	// AlertRules apply to the calls whose labels match (queue, skill,
	// agent group ... as the PBX sets them); every matching rule is
	// evaluated, each with its own episodes.
	AlertRules []LabelRule `yaml:"alert_rules"`
	// AgentScoring is "on" (default), "off" or "private".
	AgentScoring string `yaml:"agent_scoring"`
	// ExposureThreshold is the score from which a second counts as
	// exposure in reports; defaults to the alert rule's threshold.
	ExposureThreshold float64 `yaml:"exposure_threshold"`
	Audio             Audio   `yaml:"audio"`
	// ReportRetentionDays deletes reports after so many days; 0 keeps them.
	ReportRetentionDays int `yaml:"report_retention_days"`
	// Escalation is what happens when the alert rule fires: endpoints,
	// the ladder, retries and care rules.
	Escalation Escalation `yaml:"escalation"`
	// AudioHook holds the tenant's Genesys AudioHook settings.
	AudioHook AudioHook `yaml:"audiohook"`
	// JobCallbacks configures the signed callbacks of fullcall's jobs.
	JobCallbacks JobCallbacks `yaml:"job_callbacks"`

	rules []LabelRule // alert_rule and alert_rules, filled by fill
}

// APIKey is one of a tenant's keys, stored as the hex SHA-256 of the key.
// Keys are 256-bit random values, so a plain hash is enough: there is
// nothing to brute-force that a slow hash would protect.
type APIKey struct {
	ID     string `yaml:"id"`
	SHA256 string `yaml:"sha256"`
	// Disabled keys are kept for the record but no longer accepted.
	Disabled bool `yaml:"disabled"`
	// ClientSecretFile or ClientSecretEnv names where the key's client
	// secret is kept (base64, as Genesys Cloud shows it); the secret itself
	// never appears in this file. Protocols that sign their requests with
	// it (AudioHook) verify the signature with it. See secret.go.
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	// ClientSecret is the decoded secret, loaded from the file or the
	// environment when the tenants are loaded (tests may set it).
	ClientSecret Secret `yaml:"-"`
	// Role says who holds the key: "" (the default: PBXs, integrations,
	// administrators), "supervisor", "care" (the care team: agent-side
	// scores of every agent, even in private mode) or "agent" (one
	// agent's desktop: only AgentID's calls, with their own agent-side
	// scores). What each may read and do is the table in roles.go.
	Role string `yaml:"role"`
	// AgentID is the agent an "agent" key belongs to.
	AgentID string `yaml:"agent_id"`
	// ExpiresAt, when set, is the moment from which the key is refused:
	// "calmline keys rotate --keep 24h" sets it on the old key, so that
	// clients have a day to switch to the new one.
	ExpiresAt time.Time `yaml:"expires_at"`
}

// Active reports whether the key is accepted at now: not disabled and not
// expired.
func (k *APIKey) Active(now time.Time) bool {
	return !k.Disabled && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt))
}

// AlertRule is a tenant's rule for raising an alert on a score.
type AlertRule struct {
	ID              string  `yaml:"id"`
	Score           string  `yaml:"score"`
	Threshold       float64 `yaml:"threshold"`
	HoldSeconds     int     `yaml:"hold_seconds"`
	ClearBelow      float64 `yaml:"clear_below"`
	CooldownSeconds int     `yaml:"cooldown_seconds"`
}

// LabelRule is an alert rule for the calls whose labels include every
// label of Match (an empty Match: every call).
type LabelRule struct {
	AlertRule `yaml:",inline"`
	Match     map[string]string `yaml:"match"`
}

// Matches reports whether a call with the given labels falls under the
// rule.
func (r *LabelRule) Matches(labels map[string]string) bool {
	for k, v := range r.Match {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// MaxAlertRules bounds a tenant's alert rules.
const MaxAlertRules = 64

// Audio is the tenant's policy for raw audio.
type Audio struct {
	// Store keeps the raw audio with the report; off by default.
	Store         bool `yaml:"store"`
	RetentionDays int  `yaml:"retention_days"`
}

// DefaultAlertRule is the rule a tenant gets when its file names none.
var DefaultAlertRule = AlertRule{
	ID:              "caller-pressure",
	Score:           ScoreCallerPressure,
	Threshold:       70,
	HoldSeconds:     3,
	ClearBelow:      55,
	CooldownSeconds: 30,
}

type file struct {
	Tenants []*Tenant `yaml:"tenants"`
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Parse reads a tenants file, fills defaults and checks it, naming the first
// problem it finds.
func Parse(data []byte) ([]*Tenant, error) { return parse(data, true) }

// Check checks a tenants file as Parse does, except that it does not read
// the keys' client secrets (their files or variables may exist only where
// the services run). Tools that edit the file check it with Check before
// they write it.
func Check(data []byte) error {
	_, err := parse(data, false)
	return err
}

func parse(data []byte, secrets bool) ([]*Tenant, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt setting is an error, not a silent default
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse tenants file: %w", err)
	}
	seenTenant := map[string]bool{}
	seenKey := map[string]string{}
	for i, t := range f.Tenants {
		if t == nil {
			return nil, fmt.Errorf("tenant #%d: empty entry", i+1)
		}
		if !idPattern.MatchString(t.ID) {
			return nil, fmt.Errorf("tenant #%d: id %q must match %s", i+1, t.ID, idPattern)
		}
		if seenTenant[t.ID] {
			return nil, fmt.Errorf("tenant %q: listed twice", t.ID)
		}
		seenTenant[t.ID] = true
		if !secrets {
			for i := range t.APIKeys {
				k := &t.APIKeys[i]
				if k.ClientSecretFile != "" && k.ClientSecretEnv != "" {
					return nil, fmt.Errorf("tenant %q: api key %q: set client_secret_file or client_secret_env, not both", t.ID, k.ID)
				}
				k.ClientSecretFile, k.ClientSecretEnv = "", ""
			}
		}
		if err := t.fill(); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", t.ID, err)
		}
		for _, k := range t.APIKeys {
			if other, dup := seenKey[k.SHA256]; dup {
				return nil, fmt.Errorf("tenant %q: api key %q has the same hash as a key of tenant %q", t.ID, k.ID, other)
			}
			seenKey[k.SHA256] = t.ID
		}
	}
	return f.Tenants, nil
}

func (t *Tenant) fill() error {
	if t.Name == "" {
		t.Name = t.ID
	}
	for i := range t.APIKeys {
		k := &t.APIKeys[i]
		if k.ID == "" {
			return fmt.Errorf("api key #%d: missing id", i+1)
		}
		k.SHA256 = strings.ToLower(k.SHA256)
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("api key %q: sha256 must be 64 hex digits", k.ID)
		}
		if err := k.loadClientSecret(); err != nil {
			return fmt.Errorf("api key %q: %w", k.ID, err)
		}
		switch {
		case !validRole(k.Role):
			return fmt.Errorf("api key %q: role %q: want supervisor, care, agent or none", k.ID, k.Role)
		case k.Role == KeyRoleAgent && k.AgentID == "":
			return fmt.Errorf("api key %q: role agent needs an agent_id", k.ID)
		case k.Role != KeyRoleAgent && k.AgentID != "":
			return fmt.Errorf("api key %q: agent_id is only for role agent", k.ID)
		}
	}
	if err := t.AudioHook.check(); err != nil {
		return fmt.Errorf("audiohook: %w", err)
	}
	if t.MaxConcurrentCalls < 0 {
		return fmt.Errorf("max_concurrent_calls %d is negative", t.MaxConcurrentCalls)
	}
	if t.AlertRule == (AlertRule{}) && len(t.AlertRules) == 0 {
		t.AlertRule = DefaultAlertRule
	}
	switch t.AgentScoring {
	case "":
		t.AgentScoring = AgentScoringOn
	case AgentScoringOn, AgentScoringOff, AgentScoringPrivate:
	default:
		return fmt.Errorf("agent_scoring %q: want on, off or private", t.AgentScoring)
	}
	if err := t.fillRules(); err != nil {
		return err
	}
	if t.ExposureThreshold == 0 {
		// The catch-all rule's threshold, else the lowest of the
		// label rules': exposure is time at a level some rule alerts on.
		t.ExposureThreshold = t.rules[0].Threshold
		if t.AlertRule == (AlertRule{}) {
			for _, r := range t.rules {
				t.ExposureThreshold = min(t.ExposureThreshold, r.Threshold)
			}
		}
	}
	if err := t.Escalation.fill(t.ExposureThreshold); err != nil {
		return err
	}
	if t.Audio.RetentionDays < 0 || t.ReportRetentionDays < 0 {
		return errors.New("retention days must not be negative")
	}
	return t.JobCallbacks.check()
}

// Rules returns every alert rule of the tenant: the rule for every call
// (alert_rule, with an empty Match), if any, then alert_rules in file
// order. The rules must not be modified.
func (t *Tenant) Rules() []LabelRule { return t.rules }

// fillRules checks alert_rule and alert_rules, fills their defaults and
// collects them into t.rules.
func (t *Tenant) fillRules() error {
	t.rules = t.rules[:0]
	if t.AlertRule != (AlertRule{}) {
		if err := t.AlertRule.fill("alert_rule", t.AgentScoring); err != nil {
			return err
		}
		t.rules = append(t.rules, LabelRule{AlertRule: t.AlertRule})
	}
	if len(t.AlertRules) > MaxAlertRules {
		return fmt.Errorf("alert_rules: %d rules, at most %d are allowed", len(t.AlertRules), MaxAlertRules)
	}
	for i := range t.AlertRules {
		r := &t.AlertRules[i]
		where := fmt.Sprintf("alert_rules[%d]", i)
		if r.ID == "" {
			return fmt.Errorf("%s: id is required (it names the rule in alerts and silences)", where)
		}
		if err := r.AlertRule.fill(where, t.AgentScoring); err != nil {
			return err
		}
		if err := field.Labels(where+".match", r.Match); err != nil {
			return err
		}
		t.rules = append(t.rules, *r)
	}
	seen := map[string]bool{}
	for _, r := range t.rules {
		if seen[r.ID] {
			return fmt.Errorf("alert rule id %q used twice", r.ID)
		}
		seen[r.ID] = true
	}
	return nil
}

// fill checks one rule and fills its defaults; where names it in errors.
func (r *AlertRule) fill(where, agentScoring string) error {
	if r.ID == "" {
		r.ID = r.Score
	}
	if !namePattern.MatchString(r.ID) {
		return fmt.Errorf("%s.id %q must match %s", where, r.ID, namePattern)
	}
	switch r.Score {
	case ScoreCallerPressure, ScoreAgentStress:
	default:
		return fmt.Errorf("%s.score %q: want %s or %s", where, r.Score, ScoreCallerPressure, ScoreAgentStress)
	}
	if r.Threshold <= 0 || r.Threshold > 100 {
		return fmt.Errorf("%s.threshold %g: want (0, 100]", where, r.Threshold)
	}
	if r.ClearBelow == 0 {
		r.ClearBelow = r.Threshold
	}
	if r.ClearBelow > r.Threshold {
		return fmt.Errorf("%s.clear_below %g is above the threshold %g", where, r.ClearBelow, r.Threshold)
	}
	if r.HoldSeconds < 0 || r.CooldownSeconds < 0 {
		return fmt.Errorf("%s: hold_seconds and cooldown_seconds must not be negative", where)
	}
	if agentScoring != AgentScoringOn && r.Score == ScoreAgentStress {
		// Off: the score does not exist. Private: only the agent and the
		// care team may see it, so it must not set off an escalation that
		// tells the on-call team, the PBX or the intervention team.
		return fmt.Errorf("%s scores agent_stress but agent_scoring is %s: escalations then rest on caller_pressure alone", where, agentScoring)
	}
	return nil
}

// Registry holds the current tenants and finds the tenant of an API key.
// It is safe for concurrent use; Reload swaps the whole set atomically.
type Registry struct {
	path string
	mu   sync.Mutex // serialises reloads
	cur  atomic.Pointer[snapshot]
	// onReload callbacks run after each successful reload.
	onReload []func()
}

type snapshot struct {
	byID  map[string]*Tenant
	byKey map[string]keyRef
	mtime time.Time
}

type keyRef struct {
	tenant *Tenant
	key    *APIKey
}

// Load reads the tenants file at path.
func Load(path string) (*Registry, error) {
	r := &Registry{path: path}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// NewRegistry builds a registry from tenants held in memory (tests, the
// embedded demo); Reload is then a no-op.
func NewRegistry(tenants []*Tenant) (*Registry, error) {
	for _, t := range tenants {
		if err := t.fill(); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", t.ID, err)
		}
	}
	r := &Registry{}
	r.cur.Store(index(tenants, time.Time{}))
	return r, nil
}

func index(ts []*Tenant, mtime time.Time) *snapshot {
	s := &snapshot{byID: map[string]*Tenant{}, byKey: map[string]keyRef{}, mtime: mtime}
	for _, t := range ts {
		s.byID[t.ID] = t
		for i := range t.APIKeys {
			if k := &t.APIKeys[i]; !k.Disabled {
				s.byKey[k.SHA256] = keyRef{t, k}
			}
		}
	}
	return s
}

// Path returns the file the registry was loaded from.
func (r *Registry) Path() string { return r.path }

// Reload re-reads the tenants file. On error the registry keeps the tenants
// it had, so a bad edit never locks every tenant out.
func (r *Registry) Reload() error {
	if r.path == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := os.Stat(r.path)
	if err != nil {
		return fmt.Errorf("reload tenants: %w", err)
	}
	data, err := os.ReadFile(r.path)
	if err != nil {
		return fmt.Errorf("reload tenants: %w", err)
	}
	ts, err := Parse(data)
	if err != nil {
		return fmt.Errorf("reload tenants from %s: %w", r.path, err)
	}
	r.cur.Store(index(ts, st.ModTime()))
	for _, f := range r.onReload {
		f()
	}
	return nil
}

// ReloadIfChanged reloads when the file's modification time changed; it
// reports whether it reloaded. Services call it periodically, so that an
// edited file (or a Kubernetes ConfigMap update) takes effect without a
// signal.
func (r *Registry) ReloadIfChanged() (bool, error) {
	if r.path == "" {
		return false, nil
	}
	st, err := os.Stat(r.path)
	if err != nil {
		return false, fmt.Errorf("stat tenants file: %w", err)
	}
	if st.ModTime().Equal(r.cur.Load().mtime) {
		return false, nil
	}
	return true, r.Reload()
}

// OnReload registers f to run after every successful reload.
func (r *Registry) OnReload(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onReload = append(r.onReload, f)
}

// Authenticate returns the tenant owning key and the key's id.
func (r *Registry) Authenticate(key string) (t *Tenant, keyID string, ok bool) {
	t, k, ok := r.AuthenticateKey(key)
	if !ok {
		return nil, "", false
	}
	return t, k.ID, true
}

// AuthenticateKey returns the tenant owning key and the key's entry (its
// role); the entry must not be modified.
func (r *Registry) AuthenticateKey(key string) (*Tenant, *APIKey, bool) {
	if key == "" {
		return nil, nil, false
	}
	ref, ok := r.cur.Load().byKey[HashKey(key)]
	if !ok || !ref.key.Active(time.Now()) {
		return nil, nil, false
	}
	return ref.tenant, ref.key, true
}

// Tenant returns the tenant with the given id.
func (r *Registry) Tenant(id string) (*Tenant, bool) {
	t, ok := r.cur.Load().byID[id]
	return t, ok
}

// Tenants returns every tenant, in no particular order.
func (r *Registry) Tenants() []*Tenant {
	s := r.cur.Load()
	out := make([]*Tenant, 0, len(s.byID))
	for _, t := range s.byID {
		out = append(out, t)
	}
	return out
}

// HashKey returns the hex SHA-256 of an API key, as stored in the file.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// KeyPrefix starts every key NewKey makes, so that leaked keys are easy to
// find by secret scanners.
const KeyPrefix = "clk_"

// NewKey returns a new random API key.
func NewKey() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}
