package main

import "github.com/calmline/calmline/lib/voice/voicecli"

func init() {
	commands["eval"] = command{
		summary: "measure the voice analysis against the evaluation corpus (make eval)",
		run:     voicecli.Eval,
	}
	commands["impair"] = command{
		summary: "write an impaired copy of a recording: noise, echo, gain, packet loss, G.711, band (lib/impair)",
		run:     voicecli.Impair,
	}
}
