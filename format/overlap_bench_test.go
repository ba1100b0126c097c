package format_test

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// groupWAL stands in for a database's commit: a record appended to a log
// and fsynced, with group commit (one fsync covers every record written
// before it started, as PostgreSQL's WAL flush does).
type groupWAL struct {
	mu      sync.Mutex
	cond    *sync.Cond
	f       *os.File
	written int64
	synced  int64
	syncing bool
	err     error
}

func openGroupWAL(tb testing.TB, dir string) *groupWAL {
	f, err := os.Create(filepath.Join(dir, "wal"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	l := &groupWAL{f: f}
	l.cond = sync.NewCond(&l.mu)
	return l
}

var walRecord = make([]byte, 256)

func (l *groupWAL) commit() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(walRecord); err != nil {
		return err
	}
	l.written++
	mine := l.written
	for l.synced < mine && l.err == nil {
		if l.syncing {
			l.cond.Wait()
			continue
		}
		l.syncing = true
		target := l.written
		l.mu.Unlock()
		err := l.f.Sync()
		l.mu.Lock()
		l.syncing = false
		if err != nil {
			l.err = err
		}
		l.synced = max(l.synced, target)
		l.cond.Broadcast()
	}
	return l.err
}

// BenchmarkCommitOverlap prices the change-file writer at equal durability
// (SyncAlways beside a database that fsyncs its commits), as a ratio in one
// run: 8 workers commit b.N transactions each round in three ways —
// "none" (the database alone), "after-commit" (Writer.Commit after the
// database's COMMIT: two fsyncs in series) and "prepared" (Writer.Prepare
// before COMMIT, Prepared.Commit after it: the frame's fsync overlaps the
// database's). The modes alternate over rounds so that a change of the
// machine's load hits all three. cost-% is the extra time per transaction
// against none; wait-p50/p99-µs is how long Prepared.Commit waited after
// the database's commit returned.
//
//	go test -run '^$' -bench BenchmarkCommitOverlap -benchtime 2000x ./format/
func BenchmarkCommitOverlap(b *testing.B) {
	const workers, rounds = 8, 3
	dir := b.TempDir()
	wal := openGroupWAL(b, dir)
	w, err := format.OpenWriter(filepath.Join(dir, "files"), "bench", format.WithSync(format.SyncAlways, 0))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	txs := make([]*format.Tx, 256)
	for i := range txs {
		txs[i] = benchTx(i, 2)
	}
	var waitMu sync.Mutex
	var waits []time.Duration
	modes := []struct {
		name string
		tx   func(tx *format.Tx) error
	}{
		{"none", func(*format.Tx) error { return wal.commit() }},
		{"after-commit", func(tx *format.Tx) error {
			if err := wal.commit(); err != nil {
				return err
			}
			_, err := w.Commit(tx)
			return err
		}},
		{"prepared", func(tx *format.Tx) error {
			p, err := w.Prepare(tx)
			if err != nil {
				return err
			}
			if err := wal.commit(); err != nil {
				return err
			}
			start := time.Now()
			err = p.Commit()
			d := time.Since(start)
			waitMu.Lock()
			waits = append(waits, d)
			waitMu.Unlock()
			return err
		}},
	}
	elapsed := make([]time.Duration, len(modes))
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		for i, m := range modes {
			start := time.Now()
			var wg sync.WaitGroup
			for g := 0; g < workers; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < b.N; n++ {
						if err := m.tx(txs[(g*b.N+n)%len(txs)]); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed[i] += time.Since(start)
		}
	}
	b.StopTimer()
	total := float64(workers * b.N * rounds)
	for i, m := range modes {
		b.ReportMetric(total/elapsed[i].Seconds(), m.name+"-tx/s")
		if i > 0 {
			b.ReportMetric((elapsed[i].Seconds()/elapsed[0].Seconds()-1)*100, m.name+"-cost-%")
		}
	}
	slices.Sort(waits)
	if len(waits) > 0 {
		b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "wait-p50-µs")
		b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "wait-p99-µs")
	}
	b.ReportMetric(0, "ns/op")
}
