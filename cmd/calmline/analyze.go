package main

import "github.com/calmline/calmline/lib/voice/voicecli"

func init() {
	commands["analyze"] = command{
		summary: "analyse recordings: voice features and scores, one JSON object per file",
		run:     voicecli.Analyze,
	}
}
