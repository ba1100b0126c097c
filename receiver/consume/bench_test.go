package consume_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

// benchData is a pre-built stream of ~200-byte changes, 4 per transaction,
// over random keys of a 1M-key table, cut into 256 KiB messages and
// compressed with zstd.
type benchData struct {
	msgs    []consume.Message
	changes int
	raw     int64
}

var (
	benchMu   sync.Mutex
	benchSets = map[benchVersions]*benchData{}
)

// benchVersions says which row versions the bench's changes carry.
type benchVersions int

const (
	noVersions  benchVersions = iota
	seqVersions               // increasing across the table (a sequence, rowversion, an SCN)
	rowCounters               // a counter per row (an optimistic-lock column)
	prepared                  // seqVersions, each transaction prepared then committed (the default protocol)
)

// BenchTxs returns n transactions of per ~200-byte changes.
func benchTxs(n, per int) []format.Tx {
	rng := rand.New(rand.NewPCG(1, 2))
	pad := strings.Repeat("z", 120)
	txs := make([]format.Tx, n)
	now := time.Now().UnixNano()
	for i := range txs {
		txs[i].CommitTime = now + int64(i)
		txs[i].Changes = make([]format.Change, per)
		for j := range txs[i].Changes {
			k := rng.IntN(1_000_000)
			txs[i].Changes[j] = format.Change{Table: "orders", Op: format.OpUpsert, Key: fmt.Appendf(nil, "order-%07d", k),
				After: fmt.Appendf(nil, `{"id":%d,"customer":%d,"total":%d.%02d,"status":"paid","note":%q}`, k, rng.IntN(100000), rng.IntN(1000), rng.IntN(100), pad)}
		}
	}
	return txs
}

// loadBench builds the stream once per kind of row versions.
func loadBench(b *testing.B, versioned benchVersions) benchData {
	benchMu.Lock()
	defer benchMu.Unlock()
	if d := benchSets[versioned]; d != nil {
		return *d
	}
	benchSet := &benchData{}
	benchSets[versioned] = benchSet
	{
		dir := b.TempDir()
		// FERRY_BENCH_CHANGES sets the number of changes (default 500k).
		n := 500_000
		if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_CHANGES")); err == nil && v > 0 {
			n = v
		}
		txs := benchTxs(n/4, 4)
		counters := map[string]uint64{}
		for i := range txs {
			for j := range txs[i].Changes {
				c := &txs[i].Changes[j]
				switch versioned {
				case seqVersions, prepared:
					c.Version = uint64(i*4 + j + 1)
				case rowCounters:
					counters[string(c.Key)]++
					c.Version = counters[string(c.Key)]
				}
			}
		}
		if versioned == prepared {
			writePrepared(b, dir, "bench", txs)
		} else {
			wiretest.WriteSegments(b, dir, "bench", txs, 0)
		}
		msgs := wiretest.Messages(b, dir, "bench", 256<<10)
		pub := &wiretest.Publisher{Prefix: "ferry", Codec: wire.CodecZstd}
		for i, m := range msgs {
			m.Batch.Codec = wire.CodecZstd
			body, err := pub.Body(m)
			if err != nil {
				b.Fatal(err)
			}
			benchSet.msgs = append(benchSet.msgs, consume.Message{Subject: "ferry.bench", Header: m.Batch.Header(), Body: body, StreamSeq: uint64(i + 1)})
			benchSet.changes += m.Batch.Changes
			benchSet.raw += int64(len(m.Raw))
		}
	}
	return *benchSet
}

// BenchmarkApply measures the applier and the store without NATS: decompress,
// verify, decode and commit 500k changes into Pebble on disk (NoSync, 8 MiB
// batches), a fresh store per iteration.
func BenchmarkApply(b *testing.B) { benchApply(b, noVersions) }

// BenchmarkApplyVersioned is BenchmarkApply with a row version on every
// change, increasing across the table (a sequence): each is above the
// table's highest, so the row guard need not read the row.
func BenchmarkApplyVersioned(b *testing.B) { benchApply(b, seqVersions) }

// BenchmarkApplyRowCounters is BenchmarkApply with per-row counters as row
// versions: the row guard reads the stored row of every change (the cost
// of the merge rule at its most; unversioned changes to a table two sources
// write pay the same).
func BenchmarkApplyRowCounters(b *testing.B) { benchApply(b, rowCounters) }

// BenchmarkApplyPrepared is BenchmarkApplyVersioned with every transaction
// written by the order protocol (Writer.Prepare, then Prepared.Commit): the
// receiver parks each prepared frame and applies it at its outcome.
func BenchmarkApplyPrepared(b *testing.B) { benchApply(b, prepared) }

// writePrepared writes txs as prepared transactions, each committed right
// after it is prepared, as one legacy connection would.
func writePrepared(b *testing.B, dir, source string, txs []format.Tx) {
	w, err := format.OpenWriter(dir, source, format.WithSync(format.SyncNone, 0), format.WithHeartbeat(0), format.WithMaxSegmentAge(0))
	if err != nil {
		b.Fatal(err)
	}
	for i := range txs {
		p, err := w.Prepare(&txs[i])
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

func benchApply(b *testing.B, versioned benchVersions) {
	d := loadBench(b, versioned)
	dec, _ := wire.NewDecompressor()
	defer dec.Close()
	b.SetBytes(d.raw)
	b.ResetTimer()
	var elapsed, cpu, settled time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, err := store.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		m, _ := consume.NewMetrics(nil)
		ap := consume.NewApplier(st, dec, m, nil, "ferry")
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		for _, msg := range d.msgs {
			if err := ap.Handle(msg); err != nil {
				b.Fatal(err)
			}
			if n, _ := ap.Pending(); n >= 8<<20 {
				if err := ap.CommitAsync(); err != nil { // as the consumer does while catching up
					b.Fatal(err)
				}
			}
		}
		if err := ap.Commit(); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(t0)
		cpu += cpuTime() - c0
		b.StopTimer()
		// The flushes and compactions the apply left behind, until Pebble
		// owes none (at most 30 s): options that only defer that work
		// look better in cpu-ns/change but not in settled-cpu-ns/change.
		if err := st.Sync(); err != nil {
			b.Fatal(err)
		}
		// The debt estimate may stay above zero with nothing left worth
		// doing: settled also means no compaction ran or started for
		// 300 ms.
		idleSince, lastCount := time.Now(), int64(-1)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			m := st.Metrics()
			if m.Compact.NumInProgress > 0 || m.Compact.Count != lastCount {
				idleSince, lastCount = time.Now(), m.Compact.Count
			}
			if m.Compact.NumInProgress == 0 && (m.Compact.EstimatedDebt == 0 || time.Since(idleSince) > 300*time.Millisecond) {
				break
			}
		}
		settled += cpuTime() - c0
		if p := st.Position("bench"); p.Changes != uint64(d.changes) {
			b.Fatalf("applied %d changes, want %d", p.Changes, d.changes)
		}
		ap.Close()
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(d.changes)*float64(b.N)/elapsed.Seconds(), "changes/s")
	// CPU of the whole process (Pebble's flushes and compactions included)
	// per change: steadier than the rate on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(d.changes*b.N), "cpu-ns/change")
	b.ReportMetric(float64(settled.Nanoseconds())/float64(d.changes*b.N), "settled-cpu-ns/change")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
