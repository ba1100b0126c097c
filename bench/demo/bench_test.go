package demo_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/demo"
)

// BenchmarkDemo runs the whole demo (legacy, shipper, JetStream, receiver in
// one process) for 10 s per iteration and reports the end-to-end figures:
// at full speed the changes/s sustained, at 10k changes/s the commit→applied
// latency, and the initial load's rows/s (its 60k rows load during the
// first seconds, beside the live changes). Run with -benchtime 1x -count N;
// the machine's other load shows.
func BenchmarkDemo(b *testing.B) {
	for _, c := range []struct {
		name string
		rate float64
	}{{"rate=max", 0}, {"rate=10k", 10000}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				res, err := demo.Run(context.Background(), demo.Config{Rate: c.rate, Burst: 1, Duration: 10 * time.Second, Dir: b.TempDir(), Seed: uint64(i + 1)})
				if err != nil {
					b.Fatal(err)
				}
				if !res.Report.OK() {
					b.Fatal(res.Report.Err())
				}
				b.ReportMetric(res.WriteRate, "written/s")
				b.ReportMetric(res.EndToEnd, "applied/s")
				b.ReportMetric(res.Ratio, "ratio")
				b.ReportMetric(res.LoadRate, "load-rows/s")
				if res.Latency.Count > 0 {
					b.ReportMetric(float64(res.Latency.P50)/1e6, "p50-ms")
					b.ReportMetric(float64(res.Latency.P99)/1e6, "p99-ms")
				}
			}
		})
	}
}
