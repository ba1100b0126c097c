package consume_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/klauspost/compress/zstd"
)

// loadBenchMsgs is a pre-built initial load: ~200-byte rows of one table in
// key order, ~1 MiB (raw) per chunk message, zstd-compressed, as ferry load
// sends them.
type loadBenchSet struct {
	once sync.Once
	msgs []consume.Message
	rows int
	raw  int64
}

// loadBenchSets: keys "order-00001207" (text) and "1207" (integer, a
// bigint primary key's text) of the same rows.
var loadBenchSets = map[bool]*loadBenchSet{false: {}, true: {}}

func loadBenchData(b *testing.B, integer bool) ([]consume.Message, int, int64) {
	set := loadBenchSets[integer]
	set.once.Do(func() {
		// FERRY_BENCH_LOAD_ROWS sets the number of rows (default 1M).
		n := 1_000_000
		if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_LOAD_ROWS")); err == nil && v > 0 {
			n = v
		}
		c, err := wire.NewCompressor(zstd.SpeedFastest)
		if err != nil {
			b.Fatal(err)
		}
		enc := load.NewEncoder(c)
		pad := strings.Repeat("z", 120)
		const perMsg = 5000 // ~1 MiB raw
		seq := uint64(1)
		for i, chunk := 0, uint64(0); i < n; chunk++ {
			tx := &format.Tx{ID: "bench", CommitTime: time.Now().UnixNano()}
			for j := 0; j < perMsg && i < n; j, i = j+1, i+1 {
				tx.Changes = append(tx.Changes, format.Change{Table: "orders", Op: format.OpInsert, Key: benchKey(i, integer),
					After: fmt.Appendf(nil, `{"id":%d,"customer":%d,"total":%d.%02d,"status":"paid","note":%q}`, i, i%100000, i%1000, i%100, pad)})
			}
			h := load.Header{Load: "bench", Kind: load.KindChunk, Table: "orders", Chunk: chunk, LowSeq: 0, Codec: wire.CodecZstd,
				Last: true, Hi: load.KeyOf(string(tx.Changes[len(tx.Changes)-1].Key)), Time: tx.CommitTime}
			body, err := enc.Chunk(nil, &h, tx)
			if err != nil {
				b.Fatal(err)
			}
			set.msgs = append(set.msgs, consume.Message{Subject: load.Subject("ferry", "orders"), Header: h.Encode(), Body: body, StreamSeq: seq})
			seq++
			set.rows += len(tx.Changes)
			set.raw += int64(h.RawLen)
		}
	})
	return set.msgs, set.rows, set.raw
}

func benchKey(i int, integer bool) []byte {
	if integer {
		return fmt.Append(nil, i+1)
	}
	return fmt.Appendf(nil, "order-%08d", i)
}

// BenchmarkApplyLoad measures the receiver's ingest rate of initial load
// rows alone (no NATS): decompress, CRC, decode, apply and commit 1M
// ~200-byte rows into a fresh store on disk, side by side through sstable
// ingestion (path=ingest, the chunks' key ranges are empty) and through
// the batch and memtable (path=batch, WithBulkLoad(false)), for text keys
// and for integer keys (a bigint primary key: chunks in numeric order,
// which the store's numeric row keys keep apart). rows/s is to
// the last commit; durable-rows/s also waits for the store's flush (what
// the batch path still owes to Pebble); cpu-ns/row is the whole process's
// CPU to the flush.
func BenchmarkApplyLoad(b *testing.B) {
	for _, keys := range []string{"text", "integer"} {
		for _, path := range []string{"ingest", "batch"} {
			b.Run("keys="+keys+"/path="+path, func(b *testing.B) { benchApplyLoad(b, keys == "integer", path == "ingest") })
		}
	}
}

func benchApplyLoad(b *testing.B, integer, bulk bool) {
	msgs, rows, raw := loadBenchData(b, integer)
	dec, _ := wire.NewDecompressor()
	defer dec.Close()
	b.SetBytes(raw)
	b.ResetTimer()
	var elapsed, durable, cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, err := store.Open(b.TempDir(), store.WithBulkLoad(bulk))
		if err != nil {
			b.Fatal(err)
		}
		m, _ := consume.NewMetrics(nil)
		ap := consume.NewApplier(st, dec, m, nil, "ferry")
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		for _, msg := range msgs {
			if err := ap.Handle(msg); err != nil {
				b.Fatal(err)
			}
			if n, _ := ap.Pending(); n >= 8<<20 {
				if err := ap.CommitAsync(); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := ap.Commit(); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(t0)
		if err := st.Sync(); err != nil {
			b.Fatal(err)
		}
		durable += time.Since(t0)
		cpu += cpuTime() - c0
		b.StopTimer()
		l, _, _ := st.Load("bench")
		if l.Rows != uint64(rows) || (bulk && l.Bulk != uint64(rows)) || (!bulk && l.Bulk != 0) {
			b.Fatalf("load state %+v, want %d rows (bulk %v)", l, rows, bulk)
		}
		ap.Close()
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(rows)*float64(b.N)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(rows)*float64(b.N)/durable.Seconds(), "durable-rows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(rows*b.N), "cpu-ns/row")
}
