package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/prometheus/common/expfmt"
)

// procField reads the number after "field:" in /proc/<pid>/<file> (status:
// VmRSS and VmHWM in KiB; io: wchar in bytes), -1 if unreadable.
func procField(pid int, file, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

// BenchmarkReceiveProcess runs `ferry receive` as its own process against a
// pre-filled stream (embedded JetStream in this process) of 1M ~200-byte
// changes over 1M random keys, 4 per transaction, and reports:
//   - changes/s: from the process start until /v1/status shows every change
//     applied (JetStream read, decompression, CRC, decode, Pebble commit);
//   - rss-MiB / hwm-MiB: the receiver's resident memory after applying;
//   - then GET latency from this (second) process: an open-loop load of
//     10k random-key GET /v1/tables/orders/rows/{key} per second for 5 s
//     over keep-alive connections: p50-us, p99-us, req/s achieved.
func BenchmarkReceiveProcess(b *testing.B) {
	bin := buildFerryB(b)
	srv := wiretest.StartServer(b)
	_, js := srv.Connect(b)
	wiretest.CreateStream(b, js, "FERRY", "ferry")
	const per, keys = 4, 1_000_000
	// FERRY_BENCH_CHANGES sets how many changes the stream holds (default
	// 1M): more shows the rate the store sustains once compactions have to
	// keep up.
	ntx := 250_000
	if n, err := strconv.Atoi(os.Getenv("FERRY_BENCH_CHANGES")); err == nil && n > 0 {
		ntx = n / per
	}
	rng := rand.New(rand.NewPCG(7, 7))
	pad := strings.Repeat("z", 120)
	txs := make([]format.Tx, ntx)
	now := time.Now().UnixNano()
	for i := range txs {
		txs[i].CommitTime = now
		txs[i].Changes = make([]format.Change, per)
		for j := range txs[i].Changes {
			k := rng.IntN(keys)
			txs[i].Changes[j] = format.Change{Table: "orders", Op: format.OpUpsert, Key: fmt.Appendf(nil, "order-%07d", k),
				After: fmt.Appendf(nil, `{"id":%d,"customer":%d,"total":%d.%02d,"status":"paid","note":%q}`, k, rng.IntN(100000), rng.IntN(1000), rng.IntN(100), pad)}
		}
	}
	segDir := b.TempDir()
	wiretest.WriteSegments(b, segDir, "bench", txs, 0)
	msgs := wiretest.Messages(b, segDir, "bench", 1<<20)
	pub := &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}
	if _, err := pub.Publish(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	total := uint64(ntx * per)
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		data := b.TempDir()
		addr := freeAddrB(b)
		base := "http://" + addr
		logf, _ := os.Create(filepath.Join(data, "receive.log"))
		args := []string{"receive", "--nats", srv.URL, "--data", filepath.Join(data, "d"), "--http", addr, "--ready-lag", "1h"}
		// FERRY_BENCH_CACHE_MB sizes the receiver's Pebble cache (default 64).
		if mb := os.Getenv("FERRY_BENCH_CACHE_MB"); mb != "" {
			args = append(args, "--cache-mb", mb)
		}
		// FERRY_BENCH_PROFILE=FILE saves a CPU profile of the receiver
		// taken during the GET load.
		profFile := os.Getenv("FERRY_BENCH_PROFILE")
		applyProf := os.Getenv("FERRY_BENCH_APPLY_PROFILE") // same, during the catch-up
		pprofAddr := freeAddrB(b)
		if profFile != "" || applyProf != "" {
			args = append(args, "--pprof", pprofAddr)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = os.Environ() // GOMEMLIMIT, GOGC pass through
		cmd.Stdout, cmd.Stderr = logf, logf
		t0, self0 := time.Now(), selfCPU()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		applyProfDone := make(chan struct{})
		go func() {
			defer close(applyProfDone)
			if applyProf == "" {
				return
			}
			for i := 0; i < 100; i++ {
				secs := cmp.Or(os.Getenv("FERRY_BENCH_APPLY_PROFILE_SECS"), "2")
				// FERRY_BENCH_APPLY_TRACE=1: an execution trace instead.
				kind := "profile"
				if os.Getenv("FERRY_BENCH_APPLY_TRACE") != "" {
					kind = "trace"
				}
				resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/" + kind + "?seconds=" + secs)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				f, err := os.Create(applyProf)
				if err == nil {
					io.Copy(f, resp.Body)
					f.Close()
				}
				resp.Body.Close()
				return
			}
		}()
		var up time.Time // when the receiver first answered
		for {
			st, err := receiverStatusOf(base)
			if err == nil && up.IsZero() {
				up = time.Now()
			}
			if err == nil && len(st.Sources) == 1 && st.Sources[0].Changes == total {
				break
			}
			if time.Since(t0) > 5*time.Minute {
				cmd.Process.Kill()
				b.Fatalf("receiver did not apply everything in 5 min (log %s)", logf.Name())
			}
			time.Sleep(5 * time.Millisecond)
		}
		applySecs := time.Since(t0).Seconds()
		// Process start until its HTTP API answers (Pebble opened, NATS
		// connected): counted in changes/s.
		b.ReportMetric(up.Sub(t0).Seconds()*1000, "startup-ms")
		_, _, _, stalled := compactionState(base)
		b.ReportMetric(stalled*1000, "stall-ms")
		b.ReportMetric(receiverMetrics(base)("ferry_receiver_apply_seconds"), "commits")
		// This process during the catch-up: the JetStream server feeding
		// the receiver (and the status polls): the rest of the machine's
		// two cores.
		b.ReportMetric(float64((selfCPU()-self0).Nanoseconds())/float64(total), "nats-cpu-ns/change")
		b.ReportMetric(float64(procCPU(cmd.Process.Pid).Nanoseconds())/float64(total), "cpu-ns/change")
		// Bytes the receiver wrote by system calls (Pebble's flushes and
		// compactions, mostly) per change: its write amplification.
		b.ReportMetric(float64(procField(cmd.Process.Pid, "io", "wchar"))/float64(total), "wchar-B/change")
		<-applyProfDone
		b.ReportMetric(float64(total)/applySecs, "changes/s")
		b.ReportMetric(float64(procField(cmd.Process.Pid, "status", "VmRSS"))/1024, "rss-MiB")
		b.ReportMetric(float64(procField(cmd.Process.Pid, "status", "VmHWM"))/1024, "hwm-MiB")

		// FERRY_BENCH_APPLY_ONLY=1 stops here (no GET load).
		if os.Getenv("FERRY_BENCH_APPLY_ONLY") != "" {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			logf.Close()
			continue
		}
		// Let the flush and compactions the catch-up left behind settle,
		// as a service would see the store in steady state: at least one
		// periodic memtable flush (5 s), then no compaction running or
		// started for 1 s (the debt estimate alone may never reach 0), at
		// most 30 s.
		settle := time.Now()
		idle, lastCount := time.Now(), -1.0
		for time.Since(settle) < 30*time.Second {
			n, debt, count, _ := compactionState(base)
			if n != 0 || count != lastCount {
				idle, lastCount = time.Now(), count
			}
			if time.Since(settle) > 6*time.Second && n == 0 && (debt == 0 || time.Since(idle) > time.Second) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.ReportMetric(time.Since(settle).Seconds(), "settle-s")
		profDone := make(chan struct{})
		go func() {
			defer close(profDone)
			if profFile == "" {
				return
			}
			resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/profile?seconds=4")
			if err != nil {
				b.Logf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(profFile)
			if err == nil {
				io.Copy(f, resp.Body)
				f.Close()
			}
		}()
		before := serverGETHistogram(b, base)
		g := loadGETRaw(addr, 10000, 5*time.Second, keys, 32)
		<-profDone
		after := serverGETHistogram(b, base)
		sp50, sp99 := histQuantile(before, after, 0.5), histQuantile(before, after, 0.99)
		b.ReportMetric(sp50, "srv-p50-us")
		b.ReportMetric(sp99, "srv-p99-us")
		// get-p50/p99: from writing the request to reading the whole
		// answer; get-queued-p50/p99: from when the pacer handed it over,
		// so waiting for a free connection counts; get-due-p50/p99: from
		// when the request was due, so the pacer's timer lateness (~1 ms
		// on this VM) counts too.
		b.ReportMetric(g.sentP50, "get-p50-us")
		b.ReportMetric(g.sentP99, "get-p99-us")
		b.ReportMetric(g.queuedP50, "get-queued-p50-us")
		b.ReportMetric(g.queuedP99, "get-queued-p99-us")
		b.ReportMetric(g.p50, "get-due-p50-us")
		b.ReportMetric(g.p99, "get-due-p99-us")
		b.ReportMetric(g.achieved, "get-req/s")
		if g.errs > 0 {
			b.Errorf("%d GET errors", g.errs)
		}
		// The same load through net/http's client, side by side: what a Go
		// service calling the sidecar with http.Client sees.
		p50, p99, _, errs := loadGET(base, 10000, 5*time.Second, keys)
		b.ReportMetric(p50, "nethttp-p50-us")
		b.ReportMetric(p99, "nethttp-p99-us")
		if errs > 0 {
			b.Errorf("%d GET errors (net/http)", errs)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
	}
}

// compactionState reads the receiver's Pebble compactions in progress,
// compaction debt, compactions completed and write stall seconds from
// /metrics.
func compactionState(base string) (inProgress, debt, count, stalled float64) {
	get := receiverMetrics(base)
	return get("ferry_receiver_pebble_compactions_in_progress"), get("ferry_receiver_pebble_compaction_debt_bytes"),
		get("ferry_receiver_pebble_compactions_total"), get("ferry_receiver_pebble_write_stall_seconds_total")
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ = 100
}

// loadGET sends rate GETs per second for d (open loop: requests are
// scheduled on a clock, not after the previous answer) and returns the
// p50 and p99 latency in µs, the achieved rate and the errors.
func loadGET(base string, rate int, d time.Duration, keys int) (p50, p99, achieved float64, errs int) {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	const workers = 64
	jobs := make(chan string, rate)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, rate*int(d/time.Second)/workers+16)
			nerr := 0
			for url := range jobs {
				t := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					nerr++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 && resp.StatusCode != 404 {
					nerr++
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += nerr
			mu.Unlock()
		}()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	n := 0
	for time.Since(start) < d {
		due := start.Add(time.Duration(n) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		jobs <- fmt.Sprintf("%s/v1/tables/orders/rows/order-%07d", base, rng.IntN(keys))
		n++
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		return 0, 0, 0, errs
	}
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	return pct(0.50), pct(0.99), float64(len(lat)) / elapsed.Seconds(), errs
}

// serverGETHistogram reads the receiver's request duration histogram of the
// row GET route: cumulative counts by upper bound (seconds).
func serverGETHistogram(b *testing.B, base string) map[float64]uint64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	out := map[float64]uint64{}
	fam := fams["ferry_receiver_http_request_seconds"]
	if fam == nil {
		return out
	}
	for _, m := range fam.Metric {
		for _, l := range m.Label {
			if l.GetName() == "route" && strings.Contains(l.GetValue(), "{key...}") {
				for _, bk := range m.Histogram.Bucket {
					out[bk.GetUpperBound()] = bk.GetCumulativeCount()
				}
			}
		}
	}
	return out
}

// histQuantile estimates quantile q (µs) of the requests counted between two
// histogram snapshots, by linear interpolation inside the bucket.
func histQuantile(before, after map[float64]uint64, q float64) float64 {
	var bounds []float64
	for ub := range after {
		bounds = append(bounds, ub)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return -1
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	if total == 0 {
		return -1
	}
	target := q * float64(total)
	prevUB, prevCount := 0.0, 0.0
	for _, ub := range bounds {
		c := float64(after[ub] - before[ub])
		if c >= target {
			frac := 0.0
			if c > prevCount {
				frac = (target - prevCount) / (c - prevCount)
			}
			if ub > 1e9 { // +Inf
				return prevUB * 1e6
			}
			return (prevUB + frac*(ub-prevUB)) * 1e6
		}
		prevUB, prevCount = ub, c
	}
	return prevUB * 1e6
}

// receiverMetrics reads the receiver's /metrics once and returns a lookup of
// the first series of a family: a gauge's or counter's value, a histogram's
// count (-1 if missing).
func receiverMetrics(base string) func(name string) float64 {
	none := func(string) float64 { return -1 }
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return none
	}
	defer resp.Body.Close()
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return none
	}
	return func(name string) float64 {
		if f := fams[name]; f != nil && len(f.Metric) > 0 {
			if g := f.Metric[0].Gauge; g != nil {
				return g.GetValue()
			}
			if c := f.Metric[0].Counter; c != nil {
				return c.GetValue()
			}
			if h := f.Metric[0].Histogram; h != nil {
				return float64(h.GetSampleCount())
			}
		}
		return -1
	}
}
