package report_test

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/bench"
	"github.com/ferrysync/ferry/bench/report"
)

func sample() *bench.Results {
	return &bench.Results{
		Profile:  "test",
		Machine:  bench.Machine{Cores: 2, MemoryMiB: 4096, Go: "go1.26", Postgres: "15.8"},
		Settings: bench.Settings{LatencyRate: 10000},
		Modes: []bench.ModeResult{
			{Mode: "none", Load: bench.Phase{Seconds: 1, TxPerSec: 1000, ChangesPerSec: 4000}, BytesPerChange: 700},
			{Mode: "cdc-table", Load: bench.Phase{Seconds: 1, TxPerSec: 600}, OverheadPct: 40, BytesPerChange: 2400,
				Drain: &bench.Phase{Seconds: 1}, ShipChangesPerSec: 30000, LatencyJS: &bench.Latency{Samples: 10, P50: 5, P95: 9, P99: 12}},
			{Mode: "cdc-log", Error: "wal2json | missing"},
			{Mode: "file", Load: bench.Phase{Seconds: 1, TxPerSec: 970, Txs: 970, DBCPU: 0.3, ProcCPU: 0.2,
				TxStages: &bench.TxStages{Exec: 600, Append: 40, Commit: 1100, After: 300}}, OverheadPct: 3, BytesPerChange: 900,
				Concurrent: &bench.Phase{TxPerSec: 900}, ConcurrentOverheadPct: 10,
				Drain: &bench.Phase{Seconds: 1}, ShipChangesPerSec: 500000, WireBytes: 100, RawBytes: 250, Compression: 2.5,
				LatencyJS:       &bench.Latency{Samples: 10, P50: 1, P95: 2, P99: 3},
				LatencyReceiver: &bench.Latency{Samples: 10, P50: 1, P95: 2, P99: 25}},
		},
		InitialLoad: &bench.InitialLoad{Rows: 1_000_000, RowBytes: 205, TableBytes: 300 << 20, Codec: "zstd", Compression: 4,
			Messages: 210, RawBytes: 205_000_000, WireBytes: 51_250_000,
			Stream:        bench.LoadStep{Seconds: 1.5, Rows: 1_000_000, RowsPerSec: 666_667, RawMBPerSec: 137},
			Ingest:        bench.LoadStep{Seconds: 0.8, Rows: 1_000_000, RowsPerSec: 1_250_000},
			EndToEnd:      bench.LoadStep{Seconds: 2.5, Rows: 1_000_000, RowsPerSec: 400_000},
			Process:       &bench.LoadStep{Seconds: 1.6, Rows: 1_000_000, RowsPerSec: 625_000},
			LoaderPeakRSS: 80 << 20,
			StateCheck:    &bench.StateCheck{Checks: 2, Rows: 2_000_000}},
	}
}

func TestGoals(t *testing.T) {
	got := map[string]report.Goal{}
	for _, g := range report.Goals(sample()) {
		got[g.Name[:20]] = g
	}
	for _, tc := range []struct {
		prefix    string
		known     bool
		met       bool
		gotPrefix string
	}{
		{"file mode's cost to ", true, true, "3.0 %"},   // capture only: 3 % <= 5 %
		{"file mode's cost wit", true, false, "10.0 %"}, // with shipping
		{"legacy bytes per cha", true, false, "0.38"},   // 900 / 2400 > 1/3
		{"end-to-end p99, comm", true, false, "25.00 ms"},
		{"capture's extra byte", true, true, "0.12"}, // (900-700) / (2400-700)
		{"initial load: a rece", true, true, "1,250,000 rows/s"},
		{"initial load end to ", true, false, "400,000 rows/s"},
		{"initial load: the lo", true, true, "80.0 MiB"},
		{"initial load: the re", true, true, "0 of 2,000,000"},
	} {
		g, ok := got[tc.prefix]
		if !ok {
			t.Fatalf("no goal starting %q in %v", tc.prefix, got)
		}
		if g.Known != tc.known || g.Met != tc.met || !strings.HasPrefix(g.Got, tc.gotPrefix) {
			t.Errorf("goal %q: %+v, want known=%v met=%v got %q…", g.Name, g, tc.known, tc.met, tc.gotPrefix)
		}
	}
}

func TestMarkdown(t *testing.T) {
	var b bytes.Buffer
	report.Markdown(&b, sample())
	md := b.String()
	for _, want := range []string{"# Ferry bench: test profile", "| none | 1,000 ± 0 % (4,000) |", "| cdc-log | failed: wal2json / missing |", "| file | 970", "Shipping:", "| file | 600 | 40 | 1,100 | 300 | 2,040 | 515 = 309 + 206 |", "| file | 500,000 |", "## Goals", "**no**", "## Phases",
		"Initial load (bench_rows: 1,000,000 rows of ~205 bytes, 300 MiB", "| 1,250,000 | ≥ 1,000,000: met |", "| 400,000 | ≥ 500,000: **NOT met** |", "peak RSS 80.0 MiB, ≤ 128 MiB: met"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestSVG(t *testing.T) {
	for name, f := range map[string]func(io.Writer, *bench.Results) error{"throughput": report.ThroughputSVG, "latency": report.LatencySVG} {
		var b bytes.Buffer
		if err := f(&b, sample()); err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(&b)
		rects := 0
		for {
			tok, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: not well-formed SVG: %v", name, err)
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
				rects++
			}
		}
		if rects < 4 {
			t.Errorf("%s: %d rects, want bars", name, rects)
		}
	}
}

// TestInitialLoadGoalsUnmeasured: a run without the initial-load phase, or
// whose phase failed, tells nothing about its goals.
func TestInitialLoadGoalsUnmeasured(t *testing.T) {
	for name, l := range map[string]*bench.InitialLoad{"off": nil, "failed": {Rows: 10, Error: "PostgreSQL went away"}} {
		res := sample()
		res.InitialLoad = l
		n := 0
		for _, g := range report.Goals(res) {
			if strings.HasPrefix(g.Name, "initial load") {
				n++
				if g.Known {
					t.Errorf("%s: goal %q known: %+v", name, g.Name, g)
				}
			}
		}
		if n != 4 {
			t.Errorf("%s: %d initial-load goals, want 4", name, n)
		}
	}
}
