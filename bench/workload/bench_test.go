package workload_test

import (
	"testing"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
)

// BenchmarkNext measures the generator alone, then with the conversion to a
// change-file transaction, then with its SQL statements: a demo or bench
// driving a million changes/s must not be held back by it.
func BenchmarkNext(b *testing.B) {
	for _, tc := range []struct {
		name string
		use  func(tx *workload.Tx, ftx *format.Tx, st []workload.Statement) []workload.Statement
	}{
		{"generate", func(*workload.Tx, *format.Tx, []workload.Statement) []workload.Statement { return nil }},
		{"format", func(tx *workload.Tx, ftx *format.Tx, _ []workload.Statement) []workload.Statement {
			tx.AppendFormat(ftx, 1, false)
			return nil
		}},
		{"sql", func(tx *workload.Tx, _ *format.Tx, st []workload.Statement) []workload.Statement {
			return tx.Statements(st[:0])
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := workload.NewStream(workload.Config{Seed: 1}, 0)
			if err != nil {
				b.Fatal(err)
			}
			var ftx format.Tx
			var st []workload.Statement
			changes := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tx := s.Next()
				st = tc.use(tx, &ftx, st)
				changes += len(tx.Changes)
			}
			b.ReportMetric(float64(changes)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}
