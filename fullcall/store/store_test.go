package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/calmline/calmline/lib/sqldb/sqldbtest"
	callv1 "github.com/calmline/calmline/proto/calmline/call/v1"
	fullcallv1 "github.com/calmline/calmline/proto/calmline/fullcall/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	sqldbtest.Stop()
	os.Exit(code)
}

// both runs a test of the store on SQLite and on PostgreSQL: the same
// suite for both implementations.
func both(t *testing.T, f func(t *testing.T, s *Store)) {
	sqldbtest.Each(t, func(t *testing.T, dsn string) {
		s, err := Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f(t, s)
	})
}

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func report(tenant, call, agent string, minute int, peak float64, escalated bool) *fullcallv1.Report {
	r := &fullcallv1.Report{
		Version: 1, TenantId: tenant, CallId: call, AgentId: agent,
		StartedAt:      timestamppb.New(t0.Add(time.Duration(minute) * time.Minute)),
		EndedAt:        timestamppb.New(t0.Add(time.Duration(minute)*time.Minute + 30*time.Second)),
		DurationS:      30,
		Source:         fullcallv1.Source_SOURCE_STREAM,
		CallerPressure: &fullcallv1.ScoreSummary{Scored: true, Peak: peak},
	}
	if escalated {
		r.Alerts = []*callv1.AlertEvent{{AlertId: tenant + "/" + call + "/cp/1"}}
	}
	return r
}

func TestPutGetIsTenantScoped(t *testing.T) { both(t, testPutGetIsTenantScoped) }

func testPutGetIsTenantScoped(t *testing.T, s *Store) {
	ctx := context.Background()
	want := report("acme", "c1", "a1", 0, 80, true)
	if err := s.PutReport(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetReport(ctx, "acme", "c1")
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("GetReport = %v, %v; want %v", got, err, want)
	}
	if _, err := s.GetReport(ctx, "globex", "c1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant's GetReport = %v; want ErrNotFound", err)
	}
	// Storing the call again replaces the report.
	want.DurationS = 31
	if err := s.PutReport(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetReport(ctx, "acme", "c1"); got.DurationS != 31 {
		t.Errorf("replaced report has duration %v", got.DurationS)
	}
}

func TestListFiltersAndPages(t *testing.T) { both(t, testListFiltersAndPages) }

func testListFiltersAndPages(t *testing.T, s *Store) {
	ctx := context.Background()
	for i := range 25 {
		agent := "a1"
		if i%2 == 1 {
			agent = "a2"
		}
		if err := s.PutReport(ctx, report("acme", fmt.Sprintf("c%02d", i), agent, i, float64(40+2*i), i%5 == 0)); err != nil {
			t.Fatal(err)
		}
	}
	s.PutReport(ctx, report("globex", "g1", "a1", 3, 99, true))

	var all []string
	tok := ""
	for pages := 0; ; pages++ {
		rs, next, err := s.ListReports(ctx, "acme", Query{PageSize: 10, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			all = append(all, r.CallId)
		}
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages; want 3", pages+1)
			}
			break
		}
		tok = next
	}
	if len(all) != 25 || all[0] != "c24" || all[24] != "c00" {
		t.Errorf("pages gave %d reports from %v to %v; want c24 .. c00", len(all), all[0], all[len(all)-1])
	}
	yes := true
	for _, c := range []struct {
		name string
		q    Query
		want int
	}{
		{"agent", Query{AgentID: "a2"}, 12},
		{"time range", Query{StartedAfter: t0.Add(5 * time.Minute), StartedBefore: t0.Add(10 * time.Minute)}, 5},
		{"min peak", Query{MinPeak: 80}, 5},
		{"escalated", Query{Escalated: &yes}, 5},
	} {
		rs, _, err := s.ListReports(ctx, "acme", c.q)
		if err != nil || len(rs) != c.want {
			t.Errorf("%s: %d reports, %v; want %d", c.name, len(rs), err, c.want)
		}
		for _, r := range rs {
			if r.TenantId != "acme" {
				t.Errorf("%s: listed another tenant's report", c.name)
			}
		}
	}
	if _, _, err := s.ListReports(ctx, "acme", Query{PageToken: "!!"}); !errors.Is(err, ErrBadPageToken) {
		t.Errorf("bad token: %v", err)
	}
}
