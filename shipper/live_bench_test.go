package shipper_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// liveWriterEnv makes the test binary run a live writer instead of the tests
// (see TestMain): "DIR,CHANGES_PER_SECOND,SECONDS".
const liveWriterEnv = "FERRY_SHIPPER_LIVE_WRITER"

// runLiveWriter commits 4-change transactions of ~200-byte rows into DIR's
// source "orders" at a fixed rate, with the writer's default options (sync
// every 100 ms), for the given time, then closes the writer.
func runLiveWriter() int {
	args := strings.Split(os.Getenv(liveWriterEnv), ",")
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "live writer: want DIR,RATE,SECONDS")
		return 2
	}
	rate, _ := strconv.Atoi(args[1])
	secs, _ := strconv.ParseFloat(args[2], 64)
	w, err := format.OpenWriter(args[0], "orders")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := rand.New(rand.NewPCG(1, 2))
	tx := &format.Tx{Changes: make([]format.Change, 4)}
	start := time.Now()
	dur := time.Duration(secs * float64(time.Second))
	total := int(float64(rate) * secs / 4)
	for i := 0; i < total; {
		due := min(total, int(time.Since(start).Seconds()*float64(rate)/4))
		for ; i < due; i++ {
			tx.CommitTime = time.Now().UnixNano()
			for c := range tx.Changes {
				k := i*4 + c
				tx.Changes[c] = format.Change{Table: "orders", Op: format.OpUpsert, Key: strconv.AppendInt(nil, int64(1_000_000+k), 10), After: row(r, k)}
			}
			if _, err := w.Commit(tx); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if time.Since(start) > dur+5*time.Second {
			fmt.Fprintln(os.Stderr, "live writer: cannot keep the rate")
			return 1
		}
		time.Sleep(200 * time.Microsecond)
	}
	if err := w.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// procCPU returns the user+system CPU time of process pid from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// BenchmarkShipLive measures the shipper following a LIVE writer: a child
// process commits 4-change transactions of ~200-byte rows at a fixed rate
// (sync every 100 ms, the writer's default) for liveSeconds while the
// Shipper follows it into a JetStream file stream served by a nats-server
// process. Both the writer and the server run in their own processes, so
// the benchmark process's CPU (getrusage) is the shipper's; the others are
// reported apart. Metrics:
//
//	cpu-ms/kchange    shipper CPU per 1,000 changes (the figure to lower)
//	writer-ms/kchange the writer's CPU, for scale
//	server-ms/kchange nats-server's CPU
//	changes/msg       changes per message
//	B/change          message body bytes per change
//	p50-ms, p99-ms    commit → stored in the stream latency of the oldest
//	                  change of each message (commit time from the batch
//	                  header, stored time from the stream), from half a
//	                  second after the first commit on
//	chg-p50-ms, chg-p99-ms  the same over changes, each message's changes
//	                  taken as committed evenly from its first to its last
//	                  commit time
//
// Run: go test -run '^$' -bench ShipLive -benchtime 1x -count 3 ./shipper/
func BenchmarkShipLive(b *testing.B) {
	const liveSeconds = 3
	bin := natsServerBinary(b)
	type live struct {
		codec  wire.Codec
		linger time.Duration
	}
	cases := []live{
		{wire.CodecZstd, 2 * time.Millisecond}, {wire.CodecZstd, 5 * time.Millisecond}, {wire.CodecZstd, 10 * time.Millisecond},
		{wire.CodecS2, 2 * time.Millisecond},
	}
	for _, rate := range []int{10_000, 50_000} {
		for _, lc := range cases {
			codec, linger := lc.codec, lc.linger
			b.Run(fmt.Sprintf("rate=%d/codec=%s/linger=%v", rate, codec, linger), func(b *testing.B) {
				var cpu, wcpu, scpu time.Duration
				var changes, msgs, body uint64
				var lat, chg []float64
				for i := 0; i < b.N; i++ {
					st := shipLive(b, bin, rate, liveSeconds, codec, linger)
					cpu += st.cpu
					wcpu += st.writer
					scpu += st.server
					changes += st.changes
					msgs += st.msgs
					body += st.body
					lat = append(lat, st.lat...)
					chg = append(chg, st.chg...)
				}
				k := float64(changes) / 1000
				b.ReportMetric(float64(cpu.Milliseconds())/k, "cpu-ms/kchange")
				b.ReportMetric(float64(wcpu.Milliseconds())/k, "writer-ms/kchange")
				b.ReportMetric(float64(scpu.Milliseconds())/k, "server-ms/kchange")
				b.ReportMetric(float64(changes)/float64(msgs), "changes/msg")
				b.ReportMetric(float64(body)/float64(changes), "B/change")
				slices.Sort(lat)
				if len(lat) > 0 {
					b.ReportMetric(lat[len(lat)/2], "p50-ms")
					b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
				}
				slices.Sort(chg)
				if len(chg) > 0 {
					b.ReportMetric(chg[len(chg)/2], "chg-p50-ms")
					b.ReportMetric(chg[len(chg)*99/100], "chg-p99-ms")
				}
			})
		}
	}
}

type liveStats struct {
	cpu, writer, server time.Duration
	changes, msgs, body uint64
	lat                 []float64 // ms, one per message
	chg                 []float64 // ms, one per change
}

func shipLive(b *testing.B, bin string, rate int, secs float64, codec wire.Codec, linger time.Duration) liveStats {
	b.Helper()
	p := &serverProc{bin: bin, store: b.TempDir(), port: freePort(b)}
	p.start(b)
	defer p.kill()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", p.port), nats.ReconnectBufSize(-1))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	c, err := jsclient.New(ctx, nc, jsclient.Config{})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	s, err := shipper.New(c, dir, "orders", shipper.WithCheckpoint(""), shipper.WithCodec(codec), shipper.WithLinger(linger))
	if err != nil {
		b.Fatal(err)
	}
	srv0 := procCPU(p.cmd.Process.Pid)
	cpu0 := cpuTime()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	w := exec.Command(os.Args[0])
	w.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%g", liveWriterEnv, dir, rate, secs))
	w.Stderr = os.Stderr
	if err := w.Run(); err != nil {
		s.Stop()
		b.Fatalf("live writer: %v", err)
	}
	segs, err := format.ListSegments(dir, "orders")
	if err != nil || len(segs) == 0 {
		b.Fatalf("no segments: %v", err)
	}
	fi, err := os.Stat(segs[len(segs)-1].Path)
	if err != nil {
		b.Fatal(err)
	}
	end := format.Position{Segment: segs[len(segs)-1].Segment, Offset: fi.Size()}
	for s.Stats().Acked.Less(end) {
		select {
		case err := <-errc:
			b.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	var out liveStats
	out.cpu = cpuTime() - cpu0
	out.server = procCPU(p.cmd.Process.Pid) - srv0
	s.Stop()
	ru := w.ProcessState.SysUsage().(*syscall.Rusage)
	out.writer = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	st := s.Stats()
	out.changes, out.msgs, out.body = st.Changes, st.Batches, st.CompressedBytes
	if want := uint64(float64(rate) * secs); out.changes != want {
		b.Fatalf("shipped %d changes, want %d", out.changes, want)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	str, err := js.Stream(ctx, "FERRY")
	if err != nil {
		b.Fatal(err)
	}
	// Latencies in the steady state: from half a second after the first
	// commit (the session's start, its fenced first publish, is not what
	// is measured).
	var from int64
	for seq := uint64(1); ; seq++ {
		m, err := str.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		bt, err := wire.ParseHeader(m.Header)
		if err != nil || bt.FirstCommit == 0 {
			continue
		}
		if from == 0 {
			from = bt.FirstCommit + int64(500*time.Millisecond)
		}
		if bt.FirstCommit < from {
			continue
		}
		out.lat = append(out.lat, float64(m.Time.UnixNano()-bt.FirstCommit)/1e6)
		for k := 0; k < bt.Changes; k++ {
			commit := bt.FirstCommit
			if bt.Changes > 1 && bt.LastCommit > bt.FirstCommit {
				commit += (bt.LastCommit - bt.FirstCommit) * int64(k) / int64(bt.Changes-1)
			}
			out.chg = append(out.chg, float64(m.Time.UnixNano()-commit)/1e6)
		}
	}
	return out
}
