package bench

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
)

func TestLatencies(t *testing.T) {
	l := newLatencies()
	// 100 transactions seen 1..100 ms after commit, one seen before its
	// commit was recorded, one never seen, one seen but never committed.
	for i := int64(1); i <= 100; i++ {
		l.commit(i, 1000)
		l.visible(i, 1000+i*int64(time.Millisecond))
	}
	l.visible(200, 5000+int64(3*time.Millisecond))
	l.commit(200, 5000)
	l.commit(300, 1)
	l.visible(400, 1)
	s := l.summary()
	if s.Samples != 101 || s.Unseen != 1 {
		t.Fatalf("samples %d unseen %d, want 101 and 1", s.Samples, s.Unseen)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", s.P50, 50}, {"p95", s.P95, 95}, {"p99", s.P99, 99}, {"max", s.Max, 100}} {
		if c.got < c.want-1.01 || c.got > c.want+1.01 {
			t.Errorf("%s = %.2f ms, want about %.0f", c.name, c.got, c.want)
		}
	}
	if e := newLatencies().summary(); e.Samples != 0 || e.P99 != 0 {
		t.Errorf("empty summary %+v", e)
	}
}

func TestCTMessageAndVersion(t *testing.T) {
	s, err := workload.NewStream(workload.Config{Customers: 5, Products: 5, Orders: 5}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sawOp = map[string]bool{}
	for i := 0; i < 50; i++ {
		tx := s.Next()
		for _, c := range tx.Changes {
			ctRow := func(op int16, r workload.Row) []any {
				vals := []any{int64(77), int64(i), op}
				for _, a := range r.Args(c.Table) {
					vals = append(vals, a)
				}
				return vals
			}
			var msg []byte
			switch c.Op.String() {
			case "insert":
				msg = appendCTMessage(nil, c.Table, 2, nil, ctRow(2, c.After))
			case "update":
				msg = appendCTMessage(nil, c.Table, 4, ctRow(3, c.Before), ctRow(4, c.After))
			case "delete":
				msg = appendCTMessage(nil, c.Table, 1, nil, ctRow(1, c.Before))
			}
			var m struct {
				Op     string         `json:"op"`
				Table  string         `json:"table"`
				LSN    int64          `json:"lsn"`
				Before map[string]any `json:"before"`
				After  map[string]any `json:"after"`
			}
			if err := json.Unmarshal(msg, &m); err != nil {
				t.Fatalf("message %s: %v", msg, err)
			}
			sawOp[m.Op] = true
			if m.Table != c.Table.Name || m.LSN != 77 {
				t.Fatalf("message %s: table %q lsn %d", msg, m.Table, m.LSN)
			}
			v, ok := afterVersion(msg)
			switch m.Op {
			case "d":
				if ok || m.After != nil || m.Before == nil {
					t.Fatalf("delete message %s: version %d found %v", msg, v, ok)
				}
			case "u":
				if m.Before == nil {
					t.Fatalf("update message without before image: %s", msg)
				}
				fallthrough
			default:
				if !ok || v != tx.Version {
					t.Fatalf("message %s: version %d (%v), want %d", msg, v, ok, tx.Version)
				}
			}
		}
	}
	for _, op := range []string{"c", "u", "d"} {
		if !sawOp[op] {
			t.Errorf("no %q message in 50 transactions", op)
		}
	}
}

func TestParseModes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Mode
		ok   bool
	}{
		{"", AllModes(), true},
		{"all", AllModes(), true},
		{"file, none,file", []Mode{ModeFile, ModeNone}, true},
		{"cdc", nil, false},
	} {
		got, err := ParseModes(tc.in)
		if (err == nil) != tc.ok || len(got) != len(tc.want) {
			t.Errorf("ParseModes(%q) = %v, %v", tc.in, got, err)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("ParseModes(%q) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

func TestDerive(t *testing.T) {
	modes := []ModeResult{
		{Mode: "none", Load: Phase{Seconds: 10, TxPerSec: 1000, Changes: 40000, WALBytes: 40000 * 400, DataBytes: 40000 * 300, DBCPU: 2, ProcCPU: 1}},
		{Mode: "file", Load: Phase{Seconds: 10, TxPerSec: 960, Changes: 38400, WALBytes: 38400 * 400, DataBytes: 38400 * 300, FileBytes: 38400 * 200, DBCPU: 2, ProcCPU: 2},
			Concurrent: &Phase{TxPerSec: 900, Changes: 36000, ProcCPU: 4, DBCPU: 2},
			Drain:      &Phase{Changes: 38400, ChangesPerSec: 500000, ProcCPU: 0.384},
			Paced:      &Phase{Changes: 10000}, WireBytes: 84400 * 100, RawBytes: 84400 * 250},
	}
	derive(modes)
	f := modes[1]
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"overhead", f.OverheadPct, 4},
		{"concurrent overhead", f.ConcurrentOverheadPct, 10},
		{"bytes/change", f.BytesPerChange, 900},
		{"file bytes/change", f.FilePerChange, 200},
		{"shipper cpu", f.ShipperCPUPer1k, 0.01},
		{"compression", f.Compression, 2.5},
		{"wire/change", f.WireBytesPerChange, 100},
		{"legacy cpu", f.LegacyCPUPer1k, 1000 * 4.0 / 38400},
	} {
		if d := c.got - c.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestPairedSD(t *testing.T) {
	// Overheads of 10, 20 and 30 %: sd 10 points.
	got := pairedSD([]float64{90, 160, 70}, []float64{100, 200, 100})
	if got < 9.999 || got > 10.001 {
		t.Errorf("pairedSD = %v, want 10", got)
	}
	if pairedSD([]float64{1}, []float64{1}) != 0 || pairedSD([]float64{1, 2}, []float64{1}) != 0 {
		t.Error("pairedSD of too few or mismatched rounds is not 0")
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/x?sslmode=disable"},
		{"postgresql://h", "postgresql://h/x"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=x"},
	} {
		if got := withDatabase(tc.in, "x"); got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
