package shipper_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Benchmarks. Run them side by side in one run (the machine is shared and
// noisy), e.g.
//
//	go test -run '^$' -bench . -benchtime 5x -count 3 ./shipper/
//
// BenchmarkShip ships pre-written segments (~200-byte JSON changes, 4 per
// transaction) into an embedded JetStream file stream; BenchmarkCeiling
// publishes messages of the size the shipper sends (the same compressed
// batches) with plain PublishMsgAsync, the equivalent of
// `nats bench js pub async`: the shipper's msgs/s over the ceiling's is the
// "fraction of the JetStream ceiling".

const benchRaw = 64 << 20 // raw change data shipped per iteration

var (
	benchDataOnce sync.Once
	benchDir      string
	benchEnd      format.Position
	benchChanges  int
)

// row returns a realistic ~200-byte JSON row.
func row(r *rand.Rand, i int) []byte {
	statuses := []string{"new", "paid", "packed", "shipped", "delivered", "returned"}
	return fmt.Appendf(nil, `{"order_id":%d,"customer_id":%d,"status":%q,"total":"%d.%02d","currency":"EUR","items":%d,"warehouse":"DE-BER-%d","updated_at":"2026-11-23T%02d:%02d:%02d.%03dZ","channel":"web","coupon":null}`,
		1_000_000+i, r.IntN(500_000), statuses[r.IntN(len(statuses))], r.IntN(900)+10, r.IntN(100), r.IntN(9)+1, r.IntN(5),
		r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1000))
}

// benchData writes benchRaw bytes of segments once per test binary run.
func benchData(b *testing.B) (string, format.Position, int) {
	b.Helper()
	benchDataOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-ship-bench-")
		if err != nil {
			b.Fatal(err)
		}
		w, err := format.OpenWriter(dir, "orders", format.WithSync(format.SyncNone, 0), format.WithHeartbeat(0), format.WithMaxSegmentSize(32<<20))
		if err != nil {
			b.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		var written int64
		tx := &format.Tx{Changes: make([]format.Change, 4)}
		for i := 0; written < benchRaw; i++ {
			tx.CommitTime = time.Now().UnixNano()
			for c := range tx.Changes {
				k := i*4 + c
				tx.Changes[c] = format.Change{Table: "orders", Op: format.OpUpsert, Key: strconv.AppendInt(nil, int64(1_000_000+k), 10), After: row(r, k)}
				written += int64(len(tx.Changes[c].After)) + 20
			}
			if _, err := w.Commit(tx); err != nil {
				b.Fatal(err)
			}
			benchChanges += 4
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		segs, _ := format.ListSegments(dir, "orders")
		fi, _ := os.Stat(segs[len(segs)-1].Path)
		benchEnd = format.Position{Segment: segs[len(segs)-1].Segment, Offset: fi.Size()}
	})
	if benchDir == "" {
		b.Fatal("no bench data")
	}
	return benchDir, benchEnd, benchChanges
}

// rawBytes returns the segment bytes (frames) of dir.
func rawBytes(b *testing.B, dir string) int64 {
	segs, _ := format.ListSegments(dir, "orders")
	var n int64
	for _, s := range segs {
		fi, _ := os.Stat(s.Path)
		n += fi.Size()
	}
	return n
}

func BenchmarkShip(b *testing.B) {
	dir, end, changes := benchData(b)
	raw := rawBytes(b, dir)
	for _, bc := range []struct {
		codec   wire.Codec
		workers int
	}{{wire.CodecZstd, 2}, {wire.CodecZstd, 1}, {wire.CodecS2, 2}, {wire.CodecNone, 2}} {
		codec := bc.codec
		b.Run(fmt.Sprintf("codec=%s/workers=%d", codec, bc.workers), func(b *testing.B) {
			_, nc := startServer(b, 0)
			b.SetBytes(raw)
			var msgs, body uint64
			var elapsed, cpu time.Duration
			for i := 0; i < b.N; i++ {
				ctx := context.Background()
				c, err := jsclient.New(ctx, nc, jsclient.Config{Stream: fmt.Sprint("B", i), Prefix: fmt.Sprint("b", i)})
				if err != nil {
					b.Fatal(err)
				}
				s, err := shipper.New(c, dir, "orders", shipper.WithCodec(codec), shipper.WithCheckpoint(""), shipper.WithCompressWorkers(bc.workers))
				if err != nil {
					b.Fatal(err)
				}
				start, cpu0 := time.Now(), cpuTime()
				errc := make(chan error, 1)
				go func() { errc <- s.Run(ctx) }()
				for s.Stats().Acked.Less(end) {
					select {
					case err := <-errc:
						b.Fatalf("Run: %v", err)
					case <-time.After(time.Millisecond):
					}
				}
				elapsed += time.Since(start)
				cpu += cpuTime() - cpu0
				s.Stop()
				st := s.Stats()
				msgs += st.Batches
				body += st.CompressedBytes
				b.StopTimer()
				js, _ := jetstream.New(nc)
				js.DeleteStream(ctx, fmt.Sprint("B", i))
				b.StartTimer()
			}
			sec := elapsed.Seconds()
			b.ReportMetric(float64(changes)*float64(b.N)/sec, "changes/s")
			b.ReportMetric(float64(msgs)/sec, "msgs/s")
			b.ReportMetric(float64(body)/float64(msgs), "B/msg")
			b.ReportMetric(float64(raw)*float64(b.N)/float64(body), "ratio")
			// CPU per raw byte (the process's, the embedded server's
			// included) is steadier than rates on a shared machine.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(raw)/float64(b.N), "cpu-ns/B")
		})
	}
}

// BenchmarkCeiling publishes the shipper's own compressed batches with plain
// async publishes (no headers, no ids), bounded like the shipper (8 MiB in
// flight), as many messages per iteration as the shipper sends for the same
// data, into a fresh file stream each time: JetStream's ceiling at the
// shipper's message size.
func BenchmarkCeiling(b *testing.B) {
	dir, _, _ := benchData(b)
	raw := rawBytes(b, dir)
	comp, _ := wire.NewCompressor(zstd.SpeedFastest)
	for _, codec := range []wire.Codec{wire.CodecZstd, wire.CodecS2, wire.CodecNone} {
		b.Run("codec="+codec.String(), func(b *testing.B) {
			_, nc := startServer(b, 0)
			maxRaw := int(nc.MaxPayload()) - 4096
			bodies := batches(b, dir, comp, codec, maxRaw, 64)
			size := 0
			for _, m := range bodies {
				size += len(m)
			}
			perIter := int((raw + int64(maxRaw) - 1) / int64(maxRaw))
			js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
			ctx := context.Background()
			b.SetBytes(int64(size / len(bodies) * perIter))
			var elapsed time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				name := fmt.Sprint("CEIL", i)
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{fmt.Sprintf("ceil%d.>", i)}, Storage: jetstream.FileStorage}); err != nil {
					b.Fatal(err)
				}
				subject := fmt.Sprintf("ceil%d.x", i)
				b.StartTimer()
				start := time.Now()
				var inflight []jetstream.PubAckFuture
				var bytesIn int
				for k := 0; k < perIter; k++ {
					data := bodies[k%len(bodies)]
					for bytesIn+len(data) > shipper.DefaultMaxInFlightBytes && len(inflight) > 0 {
						select {
						case <-inflight[0].Ok():
						case err := <-inflight[0].Err():
							b.Fatal(err)
						}
						bytesIn -= len(inflight[0].Msg().Data)
						inflight = inflight[1:]
					}
					f, err := js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data}, jetstream.WithStallWait(30*time.Second))
					if err != nil {
						b.Fatal(err)
					}
					inflight = append(inflight, f)
					bytesIn += len(data)
				}
				<-js.PublishAsyncComplete()
				elapsed += time.Since(start)
				b.StopTimer()
				js.DeleteStream(ctx, name)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*perIter)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(size/len(bodies)), "B/msg")
		})
	}
}

// cpuTime returns the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// batches cuts the segments of dir into n messages like the shipper does
// and compresses them.
func batches(b *testing.B, dir string, comp *wire.Compressor, codec wire.Codec, maxRaw, n int) [][]byte {
	b.Helper()
	var out [][]byte
	rd, f, err := format.OpenReader(dir+"/"+format.SegmentName("orders", 1), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var cur []byte
	for len(out) < n {
		_, err := rd.Next()
		if err != nil {
			break
		}
		if len(cur)+len(rd.Raw()) > maxRaw {
			body, _ := comp.Compress(nil, cur, codec)
			out = append(out, body)
			cur = cur[:0]
		}
		cur = append(cur, rd.Raw()...)
	}
	return out
}

func BenchmarkCompress(b *testing.B) {
	dir, _, _ := benchData(b)
	comp, _ := wire.NewCompressor(zstd.SpeedFastest)
	rd, f, err := format.OpenReader(dir+"/"+format.SegmentName("orders", 1), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var raw []byte
	for len(raw) < 1<<20-4096 {
		if _, err := rd.Next(); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, rd.Raw()...)
	}
	for _, codec := range []wire.Codec{wire.CodecZstd, wire.CodecS2} {
		b.Run("codec="+codec.String(), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			var dst []byte
			for i := 0; i < b.N; i++ {
				dst, _ = comp.Compress(dst[:0], raw, codec)
			}
			b.ReportMetric(float64(len(raw))/float64(len(dst)), "ratio")
		})
	}
}

// BenchmarkShipRSS measures the shipper's peak resident memory while it
// ships at full speed, with the NATS server in its own process (so that only
// the shipper counts): VmHWM, after clearing the high-water mark left by the
// data generation.
func BenchmarkShipRSS(b *testing.B) {
	dir, end, _ := benchData(b)
	raw := rawBytes(b, dir)
	bin := natsServerBinary(b)
	store := b.TempDir()
	port := freePort(b)
	cmd := exec.Command(bin, "-js", "-sd", store, "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var nc *nats.Conn
	var err error
	for i := 0; i < 200; i++ {
		if nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.ReconnectBufSize(-1)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	b.SetBytes(raw)
	var peak, base float64
	for i := 0; i < b.N; i++ {
		ctx := context.Background()
		c, err := jsclient.New(ctx, nc, jsclient.Config{Stream: fmt.Sprint("R", i), Prefix: fmt.Sprint("r", i)})
		if err != nil {
			b.Fatal(err)
		}
		s, err := shipper.New(c, dir, "orders", shipper.WithCheckpoint(""))
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()                                  // return the data generation's garbage
		os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset VmHWM
		base = max(base, vmStatus(b, "VmRSS:"))
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx) }()
		for s.Stats().Acked.Less(end) {
			select {
			case err := <-errc:
				b.Fatalf("Run: %v", err)
			case <-time.After(time.Millisecond):
			}
		}
		s.Stop()
		peak = max(peak, vmStatus(b, "VmHWM:"))
		b.StopTimer()
		js, _ := jetstream.New(nc)
		js.DeleteStream(ctx, fmt.Sprint("R", i))
		b.StartTimer()
	}
	b.ReportMetric(peak, "MiB-VmHWM")
	b.ReportMetric(base, "MiB-before")
}

// vmStatus returns a memory figure of /proc/self/status, in MiB.
func vmStatus(b *testing.B, key string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	b.Fatal("no " + key)
	return 0
}
