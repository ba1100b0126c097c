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
			{Mode: "file", Load: bench.Phase{Seconds: 1, TxPerSec: 970}, OverheadPct: 3, BytesPerChange: 900,
				Concurrent: &bench.Phase{TxPerSec: 900}, ConcurrentOverheadPct: 10,
				Drain: &bench.Phase{Seconds: 1}, ShipChangesPerSec: 500000, WireBytes: 100, RawBytes: 250, Compression: 2.5,
				LatencyJS:       &bench.Latency{Samples: 10, P50: 1, P95: 2, P99: 3},
				LatencyReceiver: &bench.Latency{Samples: 10, P50: 1, P95: 2, P99: 25}},
		},
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
	for _, want := range []string{"# Ferry bench: test profile", "| none | 1,000 ± 0 % (4,000) |", "| cdc-log | failed: wal2json / missing |", "| file | 970", "Shipping:", "| file | 500,000 |", "## Goals", "**no**", "## Phases"} {
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
