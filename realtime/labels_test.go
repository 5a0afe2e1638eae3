package realtime

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	realtimev1 "github.com/calmline/calmline/proto/calmline/realtime/v1"
)

// runCall streams a call through realtime and returns the alert ids it
// raised, in order.
func runCall(t *testing.T, client realtimev1.RealtimeServiceClient, call *callv1.Call, data []byte) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.Analyze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Open{Open: &realtimev1.OpenCall{Call: call}}}); err != nil {
		t.Fatal(err)
	}
	const chunk = 1600
	var seq uint64
	for i := 0; i < len(data); i += chunk {
		seq++
		if err := stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Chunk{Chunk: &callv1.AudioChunk{
			Seq: seq, StartSample: uint64(i / 2), Data: data[i:min(i+chunk, len(data))]}}}); err != nil {
			t.Fatal(err)
		}
	}
	stream.Send(&realtimev1.AnalyzeRequest{Msg: &realtimev1.AnalyzeRequest_Close{Close: &realtimev1.CloseCall{}}})
	stream.CloseSend()
	var ids []string
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		if a := r.GetAlert(); a != nil && a.State == callv1.AlertState_ALERT_STATE_FIRING {
			ids = append(ids, a.AlertId)
		}
	}
}

// Every rule whose labels match the call's is evaluated, each with its own
// episodes; the others are not.
func TestAlertRulesChosenByCallLabels(t *testing.T) {
	_, client := startRealtime(t, DefaultOptions())
	cp := callv1.ScoreKind_SCORE_KIND_CALLER_PRESSURE
	rules := []*callv1.AlertRule{
		{Id: "everyone", Score: cp, Threshold: 70, HoldSeconds: 2, ClearBelow: 50},
		{Id: "vip", Score: cp, Threshold: 60, HoldSeconds: 1, ClearBelow: 50, MatchLabels: map[string]string{"queue": "vip"}},
		{Id: "vip-night", Score: cp, Threshold: 60, HoldSeconds: 1, ClearBelow: 50, MatchLabels: map[string]string{"queue": "vip", "shift": "night"}},
		{Id: "billing", Score: cp, Threshold: 10, HoldSeconds: 1, ClearBelow: 5, MatchLabels: map[string]string{"queue": "billing"}},
	}
	data := shouting(8, 4)
	for _, tc := range []struct {
		labels map[string]string
		want   []string // rule ids that fire
	}{
		{nil, []string{"everyone"}},
		{map[string]string{"queue": "vip", "skill": "de"}, []string{"everyone", "vip"}},
		{map[string]string{"queue": "vip", "shift": "night"}, []string{"everyone", "vip", "vip-night"}},
		{map[string]string{"queue": "VIP"}, []string{"everyone"}}, // values match exactly
	} {
		call := testCall("c1")
		call.Labels = tc.labels
		call.Policy.AlertRule = rules[0]
		call.Policy.AlertRules = rules
		var got []string
		for _, id := range runCall(t, client, call, data) {
			got = append(got, id[len("acme/c1/"):len(id)-len("/1")])
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("labels %v: rules fired %v; want %v", tc.labels, got, tc.want)
		}
	}
	// A policy from an older gateway, with only alert_rule, still alerts.
	call := testCall("c1")
	call.Labels = map[string]string{"queue": "vip"}
	if got := runCall(t, client, call, data); !slices.Equal(got, []string{"acme/c1/cp/1"}) {
		t.Errorf("alert_rule only: %v; want acme/c1/cp/1", got)
	}
}
