// Package capacity turns calmline's measured per-call costs into what a
// deployment of N concurrent calls needs: instances of each service at a
// target utilisation, bandwidth at the edge and between services, memory,
// PostgreSQL transactions and connections, outbound (SNAT) ports, and
// which limit comes next. The inputs are a data file (measured.json,
// embedded; each figure with its source); the arithmetic is here, pure, so
// that it can be tested on small numbers.
package capacity

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
)

// Measured is the committed data file: docs/performance.md's figures and
// the constants and limits the model uses, each with its source.
//
//go:embed measured.json
var Measured []byte

// An Input is one figure with where it comes from.
type Input struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Source Source  `json:"source"`
}

// Source says where an input comes from. Kind is "measured" (a command's
// output on a stated machine), "derived" (arithmetic on measured figures,
// shown in Note), "constant" (a protocol's or the code's fixed value),
// "limit" (a platform's documented limit, with its address) or
// "assumption" (a planning figure to replace with the operator's own).
type Source struct {
	Kind    string `json:"kind"`
	Where   string `json:"where"`
	Command string `json:"command,omitempty"`
	Date    string `json:"date,omitempty"`
	Machine string `json:"machine,omitempty"`
	Load    string `json:"load,omitempty"`
	Note    string `json:"note,omitempty"`
}

// Inputs are every figure the model reads. The JSON names are the data
// file's keys.
type Inputs struct {
	// Per call, measured.
	StackCPU       Input `json:"stack_cpu_core_per_call"`
	StackRSS       Input `json:"stack_rss_kib_per_call"`
	GatewayCPU     Input `json:"gateway_cpu_core_per_call"`
	GatewayRSS     Input `json:"gateway_rss_kib_per_call"`
	VoiceSpeed     Input `json:"voice_x_realtime_per_core"`
	FullcallLive   Input `json:"fullcall_live_kib_per_call"`
	FinalizeCPU    Input `json:"fullcall_finalize_cpu_ms"`
	HandshakeCPU   Input `json:"tls_handshake_cpu_ms"`
	CheckpointSize Input `json:"checkpoint_bytes"`
	ReportSize     Input `json:"report_bytes"`
	AnalysisBytes  Input `json:"second_analysis_bytes_per_second"`
	OneMachine     Input `json:"one_machine_calls"`
	AlertsPerInst  Input `json:"escalation_alerts_per_second_per_instance"`
	// BackendsCPU is realtime, fullcall and escalation in one process
	// beside a gateway in another; FullcallShare is fullcall's share of
	// it with each service in its own process, taking realtime's
	// per-second analyses (analyse-once).
	BackendsCPU   Input `json:"backends_cpu_core_per_call"`
	FullcallShare Input `json:"fullcall_share_of_backends_cpu"`
	// Per call, derived from the measured figures (TestDerivedInputs
	// checks the arithmetic).
	RealtimeCPU Input `json:"realtime_cpu_core_per_call"`
	FullcallCPU Input `json:"fullcall_cpu_core_per_call"`
	RealtimeRSS Input `json:"realtime_rss_kib_per_call"`
	FullcallRSS Input `json:"fullcall_rss_kib_per_call"`
	// What a fullcall call costs while fullcall analyses all of its audio
	// itself (realtime down or behind everywhere, or a gateway that does
	// not forward realtime's analyses).
	FullcallAloneCPU Input `json:"fullcall_alone_cpu_core_per_call"`
	FullcallAloneRSS Input `json:"fullcall_alone_rss_kib_per_call"`
	// Constants of the protocols and the code.
	FrameMs        Input `json:"frame_ms"`
	ChannelBytesPS Input `json:"channel_payload_bytes_per_second"`
	WSHeader       Input `json:"websocket_header_bytes"`
	TLSRecord      Input `json:"tls_record_overhead_bytes"`
	TCPHeader      Input `json:"tcp_header_bytes"`
	IPHeader       Input `json:"ip_header_bytes"`
	ChunkMs        Input `json:"chunk_ms"`
	GRPCOverhead   Input `json:"grpc_overhead_bytes_per_chunk"`
	MSS            Input `json:"tcp_mss_bytes"`
	DBConns        Input `json:"db_connections_per_instance"`
	DeliveryConns  Input `json:"escalation_outbound_connections_per_instance"`
	// Planning assumptions.
	CallSeconds    Input `json:"call_seconds"`
	AlertsPerHour  Input `json:"alerts_per_call_hour"`
	TxPerAlert     Input `json:"db_transactions_per_alert"`
	PGTxCeiling    Input `json:"postgres_write_tx_per_second_ceiling"`
	PGMaxConns     Input `json:"postgres_max_connections"`
	NICGbps        Input `json:"gateway_nic_gbit_per_second"`
	AppGWWSS       Input `json:"appgw_wss_connections_per_instance"`
	AppGWCUMbps    Input `json:"appgw_capacity_unit_mbit_per_second"`
	AppGWCUPerInst Input `json:"appgw_capacity_units_per_instance"`
	AppGWMaxInst   Input `json:"appgw_max_instances"`
	SNATPerIP      Input `json:"nat_gateway_snat_ports_per_ip"`
}

// Parse reads a data file strictly: an unknown key, a missing input or an
// input without a source is an error.
func Parse(data []byte) (*Inputs, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var in Inputs
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("capacity inputs: %w", err)
	}
	var errs []error
	in.each(func(key string, v *Input) {
		if err := v.check(); err != nil {
			errs = append(errs, fmt.Errorf("capacity inputs: %s: %w", key, err))
		}
	})
	if v := in.FullcallShare.Value; v >= 1 {
		errs = append(errs, fmt.Errorf("capacity inputs: fullcall_share_of_backends_cpu: %v must be under 1 (realtime's share is the rest)", v))
	}
	return &in, errors.Join(errs...)
}

func (in *Inputs) each(f func(key string, v *Input)) {
	rv := reflect.ValueOf(in).Elem()
	for i := range rv.NumField() {
		key, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("json"), ",")
		f(key, rv.Field(i).Addr().Interface().(*Input))
	}
}

func (v *Input) check() error {
	s := v.Source
	switch {
	case v.Unit == "" && v.Source.Kind == "":
		return errors.New("missing")
	case v.Value <= 0 || math.IsInf(v.Value, 0) || math.IsNaN(v.Value):
		return fmt.Errorf("value %v must be positive", v.Value)
	case v.Unit == "":
		return errors.New("no unit")
	case s.Where == "":
		return errors.New("no source: say where the figure comes from")
	}
	switch s.Kind {
	case "measured":
		if s.Command == "" || s.Date == "" || s.Machine == "" {
			return errors.New("a measured figure needs its command, date and machine")
		}
	case "derived", "assumption":
		if s.Note == "" {
			return fmt.Errorf("a %s figure needs a note saying how it was reached", s.Kind)
		}
	case "constant", "limit":
	default:
		return fmt.Errorf("source kind %q: want measured, derived, constant, limit or assumption", s.Kind)
	}
	return nil
}

// Options are the deployment's shape.
type Options struct {
	// Cores per instance (pod or VM) and the utilisation to plan for.
	Cores  float64
	Target float64
	// CheckpointEvery is fullcall's --fullcall-checkpoint-every, in
	// seconds.
	CheckpointEvery float64
	// TLS adds a TLS record's overhead to every edge frame.
	TLS bool
	// MinInstances per service (redundancy).
	MinInstances int
	// AppGateway puts an Azure Application Gateway v2 (L7) in front of
	// the gateways; otherwise an L4 load balancer passes TCP through and
	// the Application Gateway's limits do not apply.
	AppGateway bool
}

// DefaultOptions are the manifests' shape: 2-core pods at 60 %, fullcall
// checkpointing every 10 s (its default), TLS at the edge, 2 of everything.
func DefaultOptions() Options {
	return Options{Cores: 2, Target: 0.6, CheckpointEvery: 10, TLS: true, MinInstances: 2}
}

func (o Options) validate() error {
	switch {
	case o.Cores <= 0:
		return fmt.Errorf("cores per instance %v must be positive", o.Cores)
	case o.Target <= 0 || o.Target > 1:
		return fmt.Errorf("target utilisation %v must be in (0, 1]", o.Target)
	case o.CheckpointEvery <= 0 || o.CheckpointEvery > 20:
		return fmt.Errorf("checkpoint interval %vs must be in (0, 20] (fullcall's bound)", o.CheckpointEvery)
	case o.MinInstances < 1:
		return fmt.Errorf("minimum instances %d must be at least 1", o.MinInstances)
	}
	return nil
}

// Plan is what N calls need.
type Plan struct {
	Calls int `json:"calls"`
	// Instances per service, and the calls one instance takes.
	Gateway, Realtime, Fullcall, Escalation int
	CallsPerGateway                         int `json:"calls_per_gateway"`
	CallsPerRealtime                        int `json:"calls_per_realtime"`
	CallsPerFullcall                        int `json:"calls_per_fullcall"`
	// Without realtime's analyses fullcall analyses every second itself:
	// FullcallAlone instances (CallsPerFullcallAlone each) would carry
	// that at the target; RealtimeDownShare is the share of the calls
	// whose realtime analyses the planned fullcall instances can replace
	// at 100 % of their cores (1: all of them). Past it fullcall falls
	// behind, and the gateways' admission and backpressure take over
	// (docs/capacity.md, "When realtime is down").
	FullcallAlone         int     `json:"fullcall_alone"`
	CallsPerFullcallAlone int     `json:"calls_per_fullcall_alone"`
	RealtimeDownShare     float64 `json:"realtime_down_share"`
	FullcallAloneGiB      float64 `json:"fullcall_alone_memory_gib"`
	// Cores in use (not counting headroom) and resident memory, GiB.
	Cores     float64 `json:"cores"`
	MemoryGiB float64 `json:"memory_gib"`
	// Bandwidth, Gbit/s: audio payload, PBX → gateway at the IP layer,
	// gateway → realtime + fullcall at the IP layer (fullcall's share
	// with realtime's analyses).
	PayloadGbps  float64 `json:"payload_gbps"`
	EdgeGbps     float64 `json:"edge_gbps"`
	InternalGbps float64 `json:"internal_gbps"`
	// PostgreSQL: write transactions per second (checkpoints, call
	// starts and reports, escalations), bytes written per second by
	// checkpoints, connections the pools may open.
	DBWriteTx    float64 `json:"db_write_tx_per_second"`
	DBWriteMBps  float64 `json:"db_checkpoint_mbyte_per_second"`
	DBConns      int     `json:"db_connections"`
	AlertsPerSec float64 `json:"alerts_per_second"`
	SNATPorts    int     `json:"snat_ports"`
	// AppGWInstances is what an Application Gateway v2 would need at
	// its documented minimum of capacity units per instance (computed
	// always; a limit only with Options.AppGateway).
	AppGWInstances int `json:"appgw_instances"`
	// Limits are the utilisation of each ceiling; Next names the one that
	// comes next (see Compute).
	Limits []Limit `json:"limits"`
	Next   string  `json:"next_bottleneck"`
}

// A Limit is one ceiling and how much of it N calls use.
type Limit struct {
	Name string  `json:"name"`
	Used float64 `json:"used"` // 1 = at the ceiling
}

// EdgeBytesPerFrame is what one 20 ms stereo frame costs from the PBX at
// the IP layer: payload, WebSocket header, TLS record (when on), TCP and
// IP headers, one frame per segment (the PBX sends each frame as it comes).
func (in *Inputs) EdgeBytesPerFrame(tls bool) float64 {
	payload := 2 * in.ChannelBytesPS.Value * in.FrameMs.Value / 1000
	b := payload + in.WSHeader.Value + in.TCPHeader.Value + in.IPHeader.Value
	if tls {
		b += in.TLSRecord.Value
	}
	return b
}

// EdgeBitsPerSecond is one call's edge traffic at the IP layer.
func (in *Inputs) EdgeBitsPerSecond(tls bool) float64 {
	return in.EdgeBytesPerFrame(tls) * 8 * 1000 / in.FrameMs.Value
}

// InternalBitsPerSecond is one call's traffic from the gateway to one
// backend: 100 ms chunks with gRPC/HTTP/2 framing, over shared connections
// that fill segments up to the MSS.
func (in *Inputs) InternalBitsPerSecond() float64 {
	chunk := 2*in.ChannelBytesPS.Value*in.ChunkMs.Value/1000 + in.GRPCOverhead.Value
	segments := math.Ceil(chunk / in.MSS.Value)
	bytes := chunk + segments*(in.TCPHeader.Value+in.IPHeader.Value)
	return bytes * 8 * 1000 / in.ChunkMs.Value
}

// perInstance returns how many calls one instance takes at the target
// utilisation, rounded down.
func perInstance(o Options, corePerCall float64) int {
	return int(math.Floor(o.Cores * o.Target / corePerCall))
}

// instances rounds up, with the minimum for redundancy.
func instances(load float64, perInstance float64, minimum int) int {
	n := int(math.Ceil(load/perInstance - 1e-9))
	return max(n, minimum)
}

// Compute plans calls concurrent calls.
func Compute(in *Inputs, o Options, calls int) (Plan, error) {
	if err := o.validate(); err != nil {
		return Plan{}, err
	}
	if calls < 1 {
		return Plan{}, fmt.Errorf("calls %d must be positive", calls)
	}
	n := float64(calls)
	p := Plan{Calls: calls}
	p.CallsPerGateway = perInstance(o, in.GatewayCPU.Value)
	p.CallsPerRealtime = perInstance(o, in.RealtimeCPU.Value)
	p.CallsPerFullcall = perInstance(o, in.FullcallCPU.Value)
	p.Gateway = instances(n, float64(p.CallsPerGateway), o.MinInstances)
	p.Realtime = instances(n, float64(p.CallsPerRealtime), o.MinInstances)
	p.Fullcall = instances(n, float64(p.CallsPerFullcall), o.MinInstances)
	p.CallsPerFullcallAlone = perInstance(o, in.FullcallAloneCPU.Value)
	p.FullcallAlone = instances(n, float64(p.CallsPerFullcallAlone), o.MinInstances)
	p.RealtimeDownShare = 1
	if extra := n * (in.FullcallAloneCPU.Value - in.FullcallCPU.Value); extra > 0 {
		spare := float64(p.Fullcall)*o.Cores - n*in.FullcallCPU.Value
		p.RealtimeDownShare = min(1, max(0, spare/extra))
	}
	p.FullcallAloneGiB = n * in.FullcallAloneRSS.Value / (1 << 20)

	// Escalation: alerts per second against one instance's throughput.
	p.AlertsPerSec = n * in.AlertsPerHour.Value / 3600
	p.Escalation = instances(p.AlertsPerSec, in.AlertsPerInst.Value*o.Target, o.MinInstances)

	hangups := n / in.CallSeconds.Value
	p.Cores = n*(in.GatewayCPU.Value+in.RealtimeCPU.Value+in.FullcallCPU.Value) + hangups*in.FinalizeCPU.Value/1000
	if o.TLS {
		// A call's TLS handshake, once per call (as many starts as
		// hang-ups in the steady state).
		p.Cores += hangups * in.HandshakeCPU.Value / 1000
	}
	p.MemoryGiB = n * (in.GatewayRSS.Value + in.RealtimeRSS.Value + in.FullcallRSS.Value) / (1 << 20)

	p.PayloadGbps = n * 2 * in.ChannelBytesPS.Value * 8 / 1e9
	p.EdgeGbps = n * in.EdgeBitsPerSecond(o.TLS) / 1e9
	// Both backends receive the audio; fullcall also receives realtime's
	// per-second analyses, which ride in segments the audio fills.
	p.InternalGbps = n * (2*in.InternalBitsPerSecond() + 8*in.AnalysisBytes.Value) / 1e9

	checkpoints := n / o.CheckpointEvery
	p.DBWriteTx = checkpoints + 2*hangups + p.AlertsPerSec*in.TxPerAlert.Value
	p.DBWriteMBps = (checkpoints*in.CheckpointSize.Value + hangups*in.ReportSize.Value) / 1e6
	p.DBConns = int(in.DBConns.Value) * (p.Fullcall + p.Escalation)
	p.SNATPorts = int(in.DeliveryConns.Value) * p.Escalation

	// Application Gateway v2: connections and throughput in capacity
	// units, the larger decides.
	byConns := n / in.AppGWWSS.Value
	byThroughput := p.EdgeGbps * 1000 / (in.AppGWCUMbps.Value * in.AppGWCUPerInst.Value)
	p.AppGWInstances = int(math.Ceil(max(byConns, byThroughput) - 1e-9))

	p.Limits = []Limit{
		{"one machine running everything (measured)", n / in.OneMachine.Value},
		{"PostgreSQL write transactions/s", p.DBWriteTx / in.PGTxCeiling.Value},
		{"PostgreSQL connections", float64(p.DBConns) / in.PGMaxConns.Value},
		{"one gateway NIC's bandwidth", n * in.EdgeBitsPerSecond(o.TLS) / 1e9 / float64(p.Gateway) / in.NICGbps.Value},
		{"NAT Gateway SNAT ports (one IP)", float64(p.SNATPorts) / in.SNATPerIP.Value},
	}
	if o.AppGateway {
		p.Limits = append(p.Limits, Limit{"Application Gateway v2 instances (one gateway)", float64(p.AppGWInstances) / in.AppGWMaxInst.Value})
	}
	// While one machine can run everything, that machine is the limit;
	// past it the services run as separate instances (the Kubernetes
	// topology) and the next limit is the nearest of the shared ones.
	if p.Limits[0].Used <= 1 {
		p.Next = p.Limits[0].Name
		return p, nil
	}
	best := -1.0
	for _, l := range p.Limits[1:] {
		if l.Used > best {
			best, p.Next = l.Used, l.Name
		}
	}
	return p, nil
}
