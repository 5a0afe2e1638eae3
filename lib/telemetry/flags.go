package telemetry

import "flag"

// RegisterFlags adds the telemetry flags every calmline command shares.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.OTLPEndpoint, "otlp-endpoint", "", "export traces over OTLP/gRPC to this host:port (off when empty)")
	fs.BoolVar(&o.OTLPInsecure, "otlp-insecure", false, "connect to the OTLP endpoint without TLS")
}
