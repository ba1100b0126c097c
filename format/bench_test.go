package format_test

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// benchTx returns a transaction of n changes of about 200 bytes each (table,
// key and a JSON after image), like a legacy order system's rows.
func benchTx(seq, n int) *format.Tx {
	tx := &format.Tx{CommitTime: time.Now().UnixNano(), ID: fmt.Sprintf("tx-%d", seq)}
	for i := 0; i < n; i++ {
		after := fmt.Appendf(nil, `{"order_id":%d,"line":%d,"sku":"SKU-%06d","qty":%d,"price":%d.%02d,"status":"CONFIRMED","note":"%s"}`,
			seq, i, (seq*7+i)%1000000, i%9+1, seq%997, i%100, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
		tx.Changes = append(tx.Changes, format.Change{Table: "order_lines", Op: format.OpUpsert,
			Key: fmt.Appendf(nil, "%d/%d", seq, i), After: after})
	}
	return tx
}

// changeSize is the encoded size of one change of benchTx, for the report.
func changeSize() int {
	return format.TxPayloadLen(benchTx(1000, 2)) - format.TxPayloadLen(benchTx(1000, 1))
}

// BenchmarkDecode measures ParseFrame + DecodeTx over a buffer of
// transaction frames: the receiver's and shipper's hot loop.
func BenchmarkDecode(b *testing.B) {
	for _, per := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("changes=%d", per), func(b *testing.B) {
			var buf []byte
			var err error
			for i := 0; len(buf) < 4<<20; i++ {
				if buf, err = format.AppendTx(buf, benchTx(i, per)); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			var tx format.Tx
			changes := 0
			b.ResetTimer()
			for b.Loop() {
				for off := 0; off < len(buf); {
					f, n, err := format.ParseFrame(buf[off:])
					if err != nil {
						b.Fatal(err)
					}
					if err := format.DecodeTx(f.Payload, &tx); err != nil {
						b.Fatal(err)
					}
					changes += len(tx.Changes)
					off += n
				}
			}
			b.ReportMetric(float64(changes)/b.Elapsed().Seconds(), "changes/s")
		})
	}
	b.Logf("one change is %d bytes encoded", changeSize())
}

// BenchmarkReader measures a Reader going through a real segment file
// (CRC-checked frames, 10 changes per transaction), without and with
// decoding the transactions.
func BenchmarkReader(b *testing.B) {
	dir := b.TempDir()
	w, err := format.OpenWriter(dir, "bench", format.WithSync(format.SyncNone, 0), format.WithMaxSegmentSize(1<<30))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 16<<20/2000; i++ {
		if _, err := w.Commit(benchTx(i, 10)); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, format.SegmentName("bench", 1))
	for _, decode := range []bool{false, true} {
		b.Run(fmt.Sprintf("decode=%v", decode), func(b *testing.B) {
			var size int64
			var tx format.Tx
			for b.Loop() {
				rd, f, err := format.OpenReader(path, 0)
				if err != nil {
					b.Fatal(err)
				}
				for {
					fr, err := rd.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					if decode && fr.Type == format.FrameTx {
						if err := format.DecodeTx(fr.Payload, &tx); err != nil {
							b.Fatal(err)
						}
					}
				}
				size = rd.End()
				f.Close()
			}
			b.SetBytes(size)
		})
	}
}

// BenchmarkCommit measures Writer.Commit throughput with SyncNone: a legacy
// application committing as fast as it can, from one goroutine and from
// several. b.N counts transactions; changes/s is the figure to read.
func BenchmarkCommit(b *testing.B) {
	for _, per := range []int{1, 10} {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("changes=%d/parallel=%v", per, parallel), func(b *testing.B) {
				w, err := format.OpenWriter(b.TempDir(), "bench", format.WithSync(format.SyncNone, 0))
				if err != nil {
					b.Fatal(err)
				}
				txs := make([]*format.Tx, 1024)
				for i := range txs {
					txs[i] = benchTx(i, per)
				}
				frame, _ := format.AppendTx(nil, txs[0])
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				b.ResetTimer()
				if parallel {
					b.RunParallel(func(pb *testing.PB) {
						for i := 0; pb.Next(); i++ {
							if _, err := w.Commit(txs[i%len(txs)]); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for i := 0; i < b.N; i++ {
						if _, err := w.Commit(txs[i%len(txs)]); err != nil {
							b.Fatal(err)
						}
					}
				}
				// Count the time to get everything into the file too.
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "changes/s")
			})
		}
	}
}

// BenchmarkCommitLatency records how long each Commit takes under each sync
// policy (one change of ~200 bytes per transaction, one committer at a
// steady pace of one commit every 20µs, as a legacy app would, not a
// saturating loop) and reports p50 and p99.
func BenchmarkCommitLatency(b *testing.B) {
	for _, policy := range []format.SyncPolicy{format.SyncNone, format.SyncInterval, format.SyncAlways} {
		b.Run("sync="+policy.String(), func(b *testing.B) {
			w, err := format.OpenWriter(b.TempDir(), "bench", format.WithSync(policy, 0))
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			tx := benchTx(1, 1)
			lat := make([]time.Duration, 0, b.N)
			next := time.Now()
			for i := 0; i < b.N; i++ {
				for time.Now().Before(next) {
				}
				start := time.Now()
				if _, err := w.Commit(tx); err != nil {
					b.Fatal(err)
				}
				d := time.Since(start)
				lat = append(lat, d)
				next = start.Add(20 * time.Microsecond)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkSyncAlways commits one small transaction at a time under
// SyncAlways, each waiting for its fsync, into appended or preallocated
// segments (WithPreallocate), and reports the process's CPU per commit
// beside the time: the cost a legacy pays for durability. Compare the two
// side by side (-count 6 | benchstat): absolute figures move with the disk.
func BenchmarkSyncAlways(b *testing.B) {
	for _, pre := range []bool{false, true} {
		b.Run(fmt.Sprintf("preallocate=%v", pre), func(b *testing.B) {
			w, err := format.OpenWriter(b.TempDir(), "bench", format.WithSync(format.SyncAlways, 0), format.WithPreallocate(pre))
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			tx := benchTx(1, 1)
			cpu0 := processCPU(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := w.Commit(tx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
