package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/calmline/calmline/lib/audio"
)

// Protocol opens calls over one ingest protocol. Adding a protocol (an
// AudioHook, Twilio-style or Asterisk client) means implementing Open and
// registering it with Register.
type Protocol interface {
	// Open connects to spec.URL, starts the call and returns once the
	// gateway has accepted it; a refusal is a *RefusedError. The
	// protocol's reader reports what the gateway sends through ev until
	// the connection ends, and then calls ev.Closed exactly once.
	Open(ctx context.Context, spec CallSpec, ev Events) (Conn, error)
}

// CallSpec describes one simulated call.
type CallSpec struct {
	// URL is the gateway's endpoint for the protocol.
	URL    string
	APIKey string
	CallID string
	// AgentID names the agent on the call.
	AgentID string
	// Format is the audio's codec, rate and channel count; Roles names
	// each channel ("caller", "agent") in interleaving order.
	Format audio.Format
	Roles  []string
	// Dialer opens the TCP connection (its LocalAddr spreads calls over
	// source addresses).
	Dialer *net.Dialer
	// TLS configures wss:// connections (a CA to trust); nil uses the
	// system's roots.
	TLS *tls.Config
	// Resume continues the call after its connection was lost (the
	// gateway died): the same call id, the audio following at ResumeAt
	// (samples per channel on the call's timeline). Only protocols whose
	// Conn implements Resumer support it.
	Resume   bool
	ResumeAt uint64
	// ClientSecret signs the connection request where the protocol
	// signs (AudioHook); empty sends it unsigned.
	ClientSecret []byte
}

// Resumer is a Conn that resumed a call: ResumedAt is where the gateway
// said the call's durable record ended.
type Resumer interface {
	ResumedAt() uint64
}

// Traits says what a protocol's gateway side tells the client, so that the
// summary measures what can be measured and no more.
type Traits struct {
	// Scores: the gateway sends scores back on the call's connection, so
	// audio→score latency is measured. Without, the summary reports the
	// latency as not applicable (null), not as zero.
	Scores bool
	// ReportSlack is how much more audio (in time) the stored report may
	// hold than the client sent: Asterisk's legs are placed on the call's
	// timeline by when each leg's MEDIA_START arrived, so the later leg
	// starts with that much silence.
	ReportSlack time.Duration
}

// Describer is implemented by protocols whose traits differ from the
// native protocol's (scores back, exact reports).
type Describer interface {
	Traits() Traits
}

// Checker is implemented by protocols that carry only some audio formats
// or channel layouts; Run refuses the others before any call opens.
type Checker interface {
	Check(f audio.Format, roles []string) error
}

// ReportIDer is implemented by connections whose call is stored under
// another id than CallSpec.CallID (AudioHook's conversation id is a
// UUID).
type ReportIDer interface {
	ReportID() string
}

// traitsOf returns p's traits.
func traitsOf(p Protocol) Traits {
	if d, ok := p.(Describer); ok {
		return d.Traits()
	}
	return Traits{Scores: true}
}

// Events receives what the gateway sends on a call. The protocol's reader
// goroutine calls them; they must not block.
type Events struct {
	// Score is called for every score covering the call's timeline up to
	// endSample (samples per channel).
	Score func(endSample uint64)
	// Stopped is called when the gateway answers the hang-up.
	Stopped func(Stopped)
	// Closed is called once when the connection ends, with the close code
	// (0 when there was none) and reason, or the read error. Protocols
	// with no answer to their start (Twilio, Asterisk) report a refusal
	// that comes after Open returned as a *RefusedError here.
	Closed func(code int, reason string, err error)
}

// Stopped is the gateway's answer to a hang-up.
type Stopped struct {
	// Verify says the protocol's answer carries no report figures (an
	// AudioHook closed, a Twilio or Asterisk close 1000 after the
	// hang-up): only the stored report, fetched afterwards, shows
	// whether it holds every byte sent.
	Verify bool
	// ReportStored says fullcall stored the call's report.
	ReportStored bool
	AudioBytes   uint64
	Chunks       uint64
	Incomplete   bool
	Error        string
}

// Flusher is a Conn whose Audio only encodes the frame: Flush sends the
// frames encoded since the last Flush in one write, each still its own
// protocol message. The pacer flushes after each call's frames due at a
// tick, so a call that sends several frames at once (behind, or with
// Options.FramesPerWrite above 1) costs one system call.
type Flusher interface {
	Flush() error
}

// Conn is one call's connection. Audio, Flush and Stop are called from
// one goroutine; Close from any.
type Conn interface {
	// Audio sends one frame of interleaved audio in the call's format.
	Audio(frame []byte) error
	// Stop hangs up; Events.Stopped and Events.Closed follow.
	Stop() error
	// Close drops the connection.
	Close() error
}

// RefusedError is a call the gateway refused: before the WebSocket
// upgrade (Status, Code) or at start (CloseCode, Reason).
type RefusedError struct {
	Status    int
	Code      string
	CloseCode int
	Reason    string
	// Disconnect is AudioHook's disconnect reason when the gateway
	// refused the open transaction that way.
	Disconnect string
}

func (e *RefusedError) Error() string {
	if e.Disconnect != "" {
		return fmt.Sprintf("refused at open: disconnect (%s) %s", e.Disconnect, e.Reason)
	}
	if e.CloseCode != 0 {
		return fmt.Sprintf("refused at start: close %d %s", e.CloseCode, e.Reason)
	}
	return fmt.Sprintf("refused before the upgrade: %d %s %s", e.Status, e.Code, e.Reason)
}

// Kind names the refusal for the summary's error counts.
func (e *RefusedError) Kind() string {
	if e.Disconnect != "" {
		return "refused_disconnect_" + e.Disconnect
	}
	if e.CloseCode != 0 {
		return fmt.Sprintf("refused_close_%d", e.CloseCode)
	}
	return fmt.Sprintf("refused_http_%d", e.Status)
}

var protocols = map[string]Protocol{}

// Register makes a protocol available by name; protocol files call it
// from init.
func Register(name string, p Protocol) { protocols[name] = p }

// Protocols lists the registered protocols.
func Protocols() []string {
	names := make([]string, 0, len(protocols))
	for n := range protocols {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// EndedError is a call the gateway ended in its protocol's own way before
// the hang-up (an AudioHook disconnect); Kind names it in the summary's
// error counts.
type EndedError struct {
	Kind   string
	Reason string
}

func (e *EndedError) Error() string {
	return fmt.Sprintf("ended by the gateway: %s: %s", e.Kind, e.Reason)
}
