package ui

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

func frame(at time.Time, applied int64, gate *TermGate) TermFrame {
	commit := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	return TermFrame{At: at, Gate: gate, Sources: []TermSource{
		{Source: "shop", Stages: []TermStage{
			{Name: "on disk", Known: true, Segment: 2, Offset: 9000, LastCommit: commit},
			{Name: "shipped", Known: true, Segment: 2, Offset: 9000, LastCommit: commit, HasLag: true},
			{Name: "applied", Known: true, Segment: 2, Offset: applied, LastCommit: commit.Add(-1500 * time.Millisecond),
				HasLag: true, LagRecords: 12, LagBytes: 9000 - applied, LagSeconds: 1.5},
		}},
		{Source: "stock", Stages: []TermStage{
			{Name: "on disk", Known: false},
			{Name: "shipped", Known: true, Segment: 1, Offset: 500},
			{Name: "applied", Known: true, Segment: 1, Offset: 100, Error: "source \"stock\" stopped: corrupt at segment 1 offset 100",
				HasLag: true, LagRecords: -1, LagBytes: 400, LagSeconds: 0},
		}},
	}}
}

func TestWriteTerm(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 5, 0, time.UTC)
	prev := frame(t0, 1000, nil)
	for _, tc := range []struct {
		name        string
		cur         TermFrame
		prev        *TermFrame
		o           TermOptions
		want, avoid []string
	}{
		{"FirstFrame", frame(t0, 1000, &TermGate{Reason: "source stock stopped: corrupt"}), nil, TermOptions{Interval: 2 * time.Second},
			[]string{"ferry status  12:00:05 UTC, every 2s (Ctrl-C to stop)", "gate: NOT READY  source stock stopped: corrupt",
				"SOURCE", "shop    on disk  2:9000", "applied  2:1000", "11:59:58.500  12", "8000", "1.500",
				"stock   on disk  -", "stock applied: source \"stock\" stopped: corrupt at segment 1 offset 100", "?"},
			[]string{"\x1b[", "/s"}},
		{"RateFromPrevious", frame(t0.Add(2*time.Second), 5096, &TermGate{Ready: true}), &prev, TermOptions{Redraw: true, Color: true},
			[]string{"\x1b[H\x1b[2J", "gate: \x1b[1;32mREADY\x1b[0m", "2.0 KiB/s", "\x1b[1;31mstock applied:"},
			[]string{"NOT READY", "every"}},
		{"Loads", TermFrame{At: t0, Gate: &TermGate{Reason: "initial load L1 of table orders: 1200 of ~5000 rows"}, Loads: []api.LoadStatus{
			{Table: "orders", Load: "L1", State: "loading", Rows: 1200, RowsEstimate: 5000, RowsPerSecond: 400, ETASeconds: 9.5, Wait: true},
			{Table: "stock", Load: "S1", State: "failed", Rows: 10, Error: "chunk 3 part 0 at stream seq 77: checksum mismatch"},
			{Table: "users", Load: "U1", State: "done", Rows: 300, RowsEstimate: 290, RowsDropped: 4, RowsIngested: 296}}}, nil, TermOptions{},
			[]string{"LOAD TABLE", "orders      L1  loading (gate waits)  1200  5000", "400", "9s",
				"stock       S1  failed", "load S1 of stock failed: chunk 3 part 0 at stream seq 77: checksum mismatch",
				"users       U1  done", "296", "no sources found"}, []string{"\x1b["}},
		{"ReadingFailed", TermFrame{At: t0, Err: errors.New("asking the receiver: connection refused")}, nil, TermOptions{},
			[]string{"reading failed: asking the receiver: connection refused", "no sources found"}, []string{"gate:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteTerm(&b, tc.cur, tc.prev, tc.o); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, a := range tc.avoid {
				if strings.Contains(out, a) {
					t.Errorf("output has %q:\n%s", a, out)
				}
			}
		})
	}
}
