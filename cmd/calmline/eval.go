package main

import "github.com/calmline/calmline/lib/voice/voicecli"

func init() {
	commands["eval"] = command{
		summary: "measure the voice analysis against the evaluation corpus (make eval)",
		run:     voicecli.Eval,
	}
}
