package capacity

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// WriteTable writes one row per plan.
func WriteTable(w io.Writer, plans []Plan) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "calls\tgateway\trealtime\tfullcall\tescalation\tcores\tmemory GiB\tpayload Gbit/s\tedge Gbit/s\tinternal Gbit/s\tPG write tx/s\tPG MB/s\tPG conns\tSNAT ports\tAppGW inst\t")
	for _, p := range plans {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t\n",
			group(p.Calls), p.Gateway, p.Realtime, p.Fullcall, p.Escalation,
			num(p.Cores), num(p.MemoryGiB), num(p.PayloadGbps), num(p.EdgeGbps), num(p.InternalGbps),
			group(int(math.Round(p.DBWriteTx))), num(p.DBWriteMBps), p.DBConns, p.SNATPorts, p.AppGWInstances)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, p := range plans {
		fmt.Fprintf(w, "%s calls: next bottleneck: %s (%s)\n", group(p.Calls), p.Next, percent(p.used(p.Next)))
	}
	return nil
}

// WriteDetail writes one plan with every limit.
func WriteDetail(w io.Writer, in *Inputs, o Options, p Plan) error {
	tls := "without TLS"
	if o.TLS {
		tls = "with TLS"
	}
	lines := []string{
		fmt.Sprintf("%s concurrent calls, %g-core instances at %s target utilisation, checkpoints every %gs", group(p.Calls), o.Cores, percent(o.Target), o.CheckpointEvery),
		"",
		fmt.Sprintf("gateway     %4d instances (%s calls each)", p.Gateway, group(p.CallsPerGateway)),
		fmt.Sprintf("realtime    %4d instances (%s calls each)", p.Realtime, group(p.CallsPerRealtime)),
		fmt.Sprintf("fullcall    %4d instances (%s calls each, taking realtime's analyses)", p.Fullcall, group(p.CallsPerFullcall)),
		fmt.Sprintf("            realtime down everywhere: fullcall analyses the calls itself; these instances can do so for %s of them at 100 %% CPU,", percent(p.RealtimeDownShare)),
		fmt.Sprintf("            all of them would take %d instances (%s calls each) and %s GiB; meanwhile the gateways refuse new calls", p.FullcallAlone, group(p.CallsPerFullcallAlone), num(p.FullcallAloneGiB)),
		"            (capacity_realtime_lag) and, while fullcall is behind, pace the admitted calls' audio rather than drop it",
		fmt.Sprintf("escalation  %4d instances (%s alerts/s)", p.Escalation, num(p.AlertsPerSec)),
		fmt.Sprintf("cores in use %s, resident memory %s GiB", num(p.Cores), num(p.MemoryGiB)),
		"",
		fmt.Sprintf("audio payload     %s Gbit/s (2 x 64 kbit/s per call)", num(p.PayloadGbps)),
		fmt.Sprintf("PBX -> gateways   %s Gbit/s at the IP layer %s (%.0f bytes per 20 ms frame, %.1f kbit/s per call)", num(p.EdgeGbps), tls, in.EdgeBytesPerFrame(o.TLS), in.EdgeBitsPerSecond(o.TLS)/1000),
		fmt.Sprintf("gateways -> backends %s Gbit/s (realtime and fullcall, %.1f kbit/s of audio per call each; fullcall also %.1f kbit/s of realtime's analyses)", num(p.InternalGbps), in.InternalBitsPerSecond()/1000, in.AnalysisBytes.Value*8/1000),
		"",
		fmt.Sprintf("PostgreSQL        %s write transactions/s, %s MB/s of checkpoints and reports, up to %d connections", group(int(math.Round(p.DBWriteTx))), num(p.DBWriteMBps), p.DBConns),
		fmt.Sprintf("outbound (SNAT)   up to %d connections from escalation to webhook and transfer endpoints", p.SNATPorts),
		fmt.Sprintf("Application Gateway v2 (if used, --appgw) %d instances at %g capacity units each", p.AppGWInstances, in.AppGWCUPerInst.Value),
		"",
		"limits (share used):",
	}
	for _, l := range p.Limits {
		mark := ""
		if l.Name == p.Next {
			mark = "  <- next"
		}
		lines = append(lines, fmt.Sprintf("  %-45s %8s%s", l.Name, percent(l.Used), mark))
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}

// WriteInputs lists the inputs with their sources.
func WriteInputs(w io.Writer, in *Inputs) error {
	var err error
	in.each(func(key string, v *Input) {
		if err != nil {
			return
		}
		s := v.Source
		_, err = fmt.Fprintf(w, "%-45s %12g %-22s %-10s %s\n", key, v.Value, v.Unit, s.Kind, s.Where)
	})
	return err
}

func (p Plan) used(name string) float64 {
	for _, l := range p.Limits {
		if l.Name == name {
			return l.Used
		}
	}
	return 0
}

func percent(f float64) string {
	if f >= 10 {
		return fmt.Sprintf("%s %%", group(int(math.Round(f*100))))
	}
	return fmt.Sprintf("%.1f %%", f*100)
}

// num prints a figure with three significant digits.
func num(f float64) string {
	switch {
	case f >= 1000:
		return group(int(math.Round(f)))
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	case f >= 1:
		return fmt.Sprintf("%.2f", f)
	default:
		return fmt.Sprintf("%.3f", f)
	}
}

// group writes n with thousands separators: 100,000.
func group(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + group(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
