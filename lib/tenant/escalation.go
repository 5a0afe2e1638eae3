package tenant

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Escalation is a tenant's escalation settings: the endpoints calmline may
// send requests to (and nowhere else), the ladder of steps an alert
// episode runs, how deliveries are retried, and the care rules that look
// after agents.
type Escalation struct {
	Endpoints []Endpoint `yaml:"endpoints"`
	// Ladder runs, in order of After, for every escalation; empty: an
	// escalation is recorded and can be handled over the API, nothing is
	// sent.
	Ladder []LadderStep `yaml:"ladder"`
	// Retry is the tenant's retry schedule; endpoints may override it.
	Retry *Retry `yaml:"retry"`
	Care  Care   `yaml:"care"`
}

// Endpoint is a named URL calmline may POST to.
type Endpoint struct {
	Name string `yaml:"name"`
	// URL is an absolute http or https URL without credentials (put those
	// in BearerToken or SigningSecrets), dot segments or encoded dots;
	// it is normalised when loaded (ParseCallbackURL).
	URL string `yaml:"url"`
	// AllowLinkLocal lets the endpoint be a link-local or cloud metadata
	// address (169.254.0.0/16, fe80::/10), which calmline otherwise
	// refuses when it connects.
	AllowLinkLocal bool `yaml:"allow_link_local"`
	// Events lists the Standard Webhooks event types the endpoint
	// receives (escalation.acknowledged, agent.care_recommended ...), "*"
	// for all. escalation.triggered is sent by the ladder's notify steps,
	// not by subscription.
	Events []string `yaml:"events"`
	// SigningSecrets sign every request (Standard Webhooks, whsec_...):
	// the current secret first, and during a rotation the previous one
	// too, so that receivers holding either accept the message.
	SigningSecrets []SecretRef `yaml:"signing_secrets"`
	// BearerToken, when set, is sent as "Authorization: Bearer ...".
	BearerToken *SecretRef `yaml:"bearer_token"`
	// Timeout bounds one attempt (default 10 s).
	Timeout time.Duration `yaml:"timeout"`
	// Retry overrides the tenant's retry schedule for this endpoint.
	Retry *Retry `yaml:"retry"`
	// Params are passed to action requests as data.params: the prompt the
	// PBX plays, the queue the intervention team takes calls on ...
	Params map[string]string `yaml:"params"`
}

// SecretRef names where a secret is: a file (a Kubernetes secret volume,
// say) or an environment variable. The secret itself never appears in the
// tenants file, and a SecretRef prints only where it points.
type SecretRef struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

// String says where the secret is, never what it is.
func (r SecretRef) String() string {
	if r.File != "" {
		return "file:" + r.File
	}
	return "env:" + r.Env
}

// Resolve reads the secret, with surrounding white space trimmed. The
// error names the reference, never the content.
func (r SecretRef) Resolve() (string, error) {
	var v string
	if r.File != "" {
		b, err := os.ReadFile(r.File)
		if err != nil {
			return "", fmt.Errorf("secret %s: %w", r, errors.Unwrap(err))
		}
		v = string(b)
	} else {
		var ok bool
		if v, ok = os.LookupEnv(r.Env); !ok {
			return "", fmt.Errorf("secret %s: not set", r)
		}
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("secret %s: empty", r)
	}
	return v, nil
}

func (r SecretRef) check() error {
	if (r.File == "") == (r.Env == "") {
		return errors.New("a secret reference needs exactly one of file or env")
	}
	return nil
}

// Ladder actions.
const (
	// ActionNotify sends escalation.triggered to the step's endpoint (the
	// on-call team).
	ActionNotify = "notify"
	// ActionWarnCaller asks the PBX to play a warning to the caller.
	ActionWarnCaller = "warn_caller"
	// ActionTransfer asks the intervention team's transfer API to take
	// the caller over.
	ActionTransfer = "transfer"
)

// Conditions that skip a ladder step when they hold at its time.
const (
	SkipIfCleared      = "cleared"
	SkipIfAcknowledged = "acknowledged"
)

// LadderStep is one rung of the escalation ladder.
type LadderStep struct {
	Name     string `yaml:"name"`
	Action   string `yaml:"action"`
	Endpoint string `yaml:"endpoint"`
	// After is the step's delay from the moment the escalation opened.
	After time.Duration `yaml:"after"`
	// SkipIf lists the conditions that skip the step when they hold at
	// its time: "cleared" (the score fell back below the rule's clearing
	// level) and "acknowledged". Default: none for notify, both for
	// warn_caller and transfer. A resolved escalation skips every step
	// still waiting.
	SkipIf []string `yaml:"skip_if"`
}

// Retry is a retry schedule: exponential backoff with jitter from Initial,
// multiplied by Multiplier after each failure up to MaxInterval, until
// GiveUpAfter has passed since the first attempt (or MaxAttempts were
// made). Unset fields take the defaults (1 s, ×2, 1 h, 24 h, no attempt
// limit).
type Retry struct {
	Initial     time.Duration `yaml:"initial"`
	Multiplier  float64       `yaml:"multiplier"`
	MaxInterval time.Duration `yaml:"max_interval"`
	GiveUpAfter time.Duration `yaml:"give_up_after"`
	MaxAttempts int           `yaml:"max_attempts"`
}

// DefaultRetry is the retry schedule of an endpoint when neither it nor
// its tenant names one: about a day.
var DefaultRetry = Retry{Initial: time.Second, Multiplier: 2, MaxInterval: time.Hour, GiveUpAfter: 24 * time.Hour}

// Care is a tenant's care rules for agents.
type Care struct {
	// HighPressurePeak makes a call high-pressure when its
	// caller_pressure peaked at or above it (default: the exposure
	// threshold); an escalated call always is.
	HighPressurePeak float64    `yaml:"high_pressure_peak"`
	Rules            []CareRule `yaml:"rules"`
}

// Recommendations a care rule can make.
const (
	RecommendBreak      = "break"
	RecommendCounsellor = "counsellor"
)

// CareRule fires when, within Window, an agent had at least
// HighPressureCalls high-pressure calls or ExposureMinutes of exposure
// (caller_pressure at or above the exposure threshold), counting calls
// since the rule last fired for the agent; it then emits
// agent.care_recommended, at most once per Window.
type CareRule struct {
	ID                string        `yaml:"id"`
	Window            time.Duration `yaml:"window"`
	HighPressureCalls int           `yaml:"high_pressure_calls"`
	ExposureMinutes   float64       `yaml:"exposure_minutes"`
	Recommend         string        `yaml:"recommend"`
}

// Event types calmline sends as Standard Webhooks.
const (
	EventEscalationTriggered         = "escalation.triggered"
	EventEscalationTransferSucceeded = "escalation.transfer_succeeded"
	EventEscalationTransferFailed    = "escalation.transfer_failed"
	EventEscalationAcknowledged      = "escalation.acknowledged"
	EventEscalationResolved          = "escalation.resolved"
	EventAgentCareRecommended        = "agent.care_recommended"
)

// SubscribableEvents are the event types an endpoint can list in Events.
var SubscribableEvents = []string{
	EventEscalationTransferSucceeded, EventEscalationTransferFailed,
	EventEscalationAcknowledged, EventEscalationResolved, EventAgentCareRecommended,
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Endpoint returns the endpoint with the given name.
func (e *Escalation) Endpoint(name string) (*Endpoint, bool) {
	for i := range e.Endpoints {
		if e.Endpoints[i].Name == name {
			return &e.Endpoints[i], true
		}
	}
	return nil, false
}

// Subscribers returns the endpoints that receive an event type.
func (e *Escalation) Subscribers(event string) []*Endpoint {
	var out []*Endpoint
	for i := range e.Endpoints {
		ep := &e.Endpoints[i]
		if slices.Contains(ep.Events, event) || slices.Contains(ep.Events, "*") {
			out = append(out, ep)
		}
	}
	return out
}

// RetryFor returns the retry schedule of an endpoint: its own, else the
// tenant's, else DefaultRetry.
func (e *Escalation) RetryFor(ep *Endpoint) Retry {
	if ep != nil && ep.Retry != nil {
		return *ep.Retry
	}
	if e.Retry != nil {
		return *e.Retry
	}
	return DefaultRetry
}

// Skips reports whether a step is skipped under a condition.
func (s *LadderStep) Skips(cond string) bool { return slices.Contains(s.SkipIf, cond) }

func (r *Retry) fill() error {
	if r.Initial == 0 {
		r.Initial = DefaultRetry.Initial
	}
	if r.Multiplier == 0 {
		r.Multiplier = DefaultRetry.Multiplier
	}
	if r.MaxInterval == 0 {
		r.MaxInterval = max(DefaultRetry.MaxInterval, r.Initial)
	}
	if r.GiveUpAfter == 0 {
		r.GiveUpAfter = DefaultRetry.GiveUpAfter
	}
	switch {
	case r.Initial < 0 || r.MaxInterval < 0 || r.GiveUpAfter < 0:
		return errors.New("durations must not be negative")
	case r.Multiplier < 1:
		return fmt.Errorf("multiplier %g must be at least 1", r.Multiplier)
	case r.MaxInterval < r.Initial:
		return fmt.Errorf("max_interval %v is below initial %v", r.MaxInterval, r.Initial)
	case r.MaxAttempts < 0:
		return errors.New("max_attempts must not be negative")
	}
	return nil
}

// fill checks the escalation settings and fills their defaults.
func (e *Escalation) fill(exposureThreshold float64) error {
	if e.Retry != nil {
		if err := e.Retry.fill(); err != nil {
			return fmt.Errorf("escalation.retry: %w", err)
		}
	}
	seen := map[string]bool{}
	for i := range e.Endpoints {
		ep := &e.Endpoints[i]
		where := fmt.Sprintf("escalation.endpoints[%d]", i)
		if !namePattern.MatchString(ep.Name) {
			return fmt.Errorf("%s: name %q must match %s", where, ep.Name, namePattern)
		}
		where = fmt.Sprintf("escalation endpoint %q", ep.Name)
		if seen[ep.Name] {
			return fmt.Errorf("%s: listed twice", where)
		}
		seen[ep.Name] = true
		u, err := ParseCallbackURL(ep.URL)
		if err != nil {
			return fmt.Errorf("%s: url: %w", where, err)
		}
		ep.URL = u.String() // what is called is what was checked
		for _, ev := range ep.Events {
			if ev == EventEscalationTriggered {
				return fmt.Errorf("%s: %s is sent by the ladder's notify steps; add a notify step for this endpoint instead", where, ev)
			}
			if ev != "*" && !slices.Contains(SubscribableEvents, ev) {
				return fmt.Errorf("%s: unknown event type %q (want one of %s or *)", where, ev, strings.Join(SubscribableEvents, ", "))
			}
		}
		for _, s := range ep.SigningSecrets {
			if err := s.check(); err != nil {
				return fmt.Errorf("%s: signing_secrets: %w", where, err)
			}
		}
		if len(ep.SigningSecrets) > 2 {
			return fmt.Errorf("%s: at most two signing secrets (the current and, during a rotation, the previous one)", where)
		}
		if ep.BearerToken != nil {
			if err := ep.BearerToken.check(); err != nil {
				return fmt.Errorf("%s: bearer_token: %w", where, err)
			}
		}
		if ep.Timeout < 0 || ep.Timeout > 5*time.Minute {
			return fmt.Errorf("%s: timeout %v: want up to 5m", where, ep.Timeout)
		}
		if ep.Timeout == 0 {
			ep.Timeout = 10 * time.Second
		}
		if ep.Retry != nil {
			if err := ep.Retry.fill(); err != nil {
				return fmt.Errorf("%s: retry: %w", where, err)
			}
		}
	}
	names := map[string]bool{}
	for i := range e.Ladder {
		st := &e.Ladder[i]
		where := fmt.Sprintf("escalation.ladder[%d]", i)
		if st.Name == "" {
			st.Name = st.Action
		}
		if !namePattern.MatchString(st.Name) {
			return fmt.Errorf("%s: name %q must match %s", where, st.Name, namePattern)
		}
		if names[st.Name] {
			return fmt.Errorf("%s: step name %q used twice", where, st.Name)
		}
		names[st.Name] = true
		switch st.Action {
		case ActionNotify, ActionWarnCaller, ActionTransfer:
		default:
			return fmt.Errorf("%s: action %q: want %s, %s or %s", where, st.Action, ActionNotify, ActionWarnCaller, ActionTransfer)
		}
		if !seen[st.Endpoint] {
			return fmt.Errorf("%s: endpoint %q is not among escalation.endpoints", where, st.Endpoint)
		}
		if st.After < 0 {
			return fmt.Errorf("%s: after %v must not be negative", where, st.After)
		}
		if st.SkipIf == nil && st.Action != ActionNotify {
			st.SkipIf = []string{SkipIfCleared, SkipIfAcknowledged}
		}
		for _, c := range st.SkipIf {
			if c != SkipIfCleared && c != SkipIfAcknowledged {
				return fmt.Errorf("%s: skip_if %q: want %s or %s", where, c, SkipIfCleared, SkipIfAcknowledged)
			}
		}
	}
	// The ladder runs in time order; keep the file's order among equal
	// delays.
	slices.SortStableFunc(e.Ladder, func(a, b LadderStep) int { return cmp.Compare(a.After, b.After) })
	c := &e.Care
	if c.HighPressurePeak == 0 {
		c.HighPressurePeak = exposureThreshold
	}
	if c.HighPressurePeak < 0 || c.HighPressurePeak > 100 {
		return fmt.Errorf("escalation.care.high_pressure_peak %g: want [0, 100]", c.HighPressurePeak)
	}
	ids := map[string]bool{}
	for i := range c.Rules {
		r := &c.Rules[i]
		where := fmt.Sprintf("escalation.care.rules[%d]", i)
		if !namePattern.MatchString(r.ID) {
			return fmt.Errorf("%s: id %q must match %s", where, r.ID, namePattern)
		}
		if ids[r.ID] {
			return fmt.Errorf("%s: id %q used twice", where, r.ID)
		}
		ids[r.ID] = true
		if r.Window <= 0 {
			return fmt.Errorf("%s: window must be positive (1h, 8h ...)", where)
		}
		if r.HighPressureCalls <= 0 && r.ExposureMinutes <= 0 {
			return fmt.Errorf("%s: set high_pressure_calls or exposure_minutes", where)
		}
		if r.HighPressureCalls < 0 || r.ExposureMinutes < 0 {
			return fmt.Errorf("%s: thresholds must not be negative", where)
		}
		switch r.Recommend {
		case "":
			r.Recommend = RecommendBreak
		case RecommendBreak, RecommendCounsellor:
		default:
			return fmt.Errorf("%s: recommend %q: want %s or %s", where, r.Recommend, RecommendBreak, RecommendCounsellor)
		}
	}
	return nil
}
