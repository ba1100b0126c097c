package writeback_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

// BenchmarkWriteBack measures a command's round trip on the whole circular
// path, in one process on real parts (rig_test.go): submitted to a
// receiver (POST /v1/commands, durable in JetStream) → delivered to the
// inbox by the agent → carried out in PostgreSQL by the applier, its
// prepared frame fsynced → shipped back → applied by the receiver, which
// then answers GET /v1/commands/{id}?wait= with applied. Every command is
// an insert of a new row (orders placed), so none is refused.
//
//	rate=1000  commands submitted at 1,000/s: p50/p99 of the round trip
//	max        256 services in a closed loop (submit, wait, next): the
//	           sustained commands/s
//	batch=100  32 services in a closed loop, each submitting 100 commands
//	           in one request (POST /v1/commands with an array) and
//	           waiting for them in one (GET /v1/commands?ids=): the
//	           sustained commands/s when services batch
//
// Run: go test -run '^$' -bench WriteBack -benchtime 5000x ./bench/writeback/
func BenchmarkWriteBack(b *testing.B) {
	rg := newRig(b, false, "svc")
	s := rg.svcs["svc"]
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024}}
	cl, err := api.NewClient(s.url, "", hc)
	if err != nil {
		b.Fatal(err)
	}
	run := 0
	var resubmits atomic.Int64
	// Where the time goes: submitted → the legacy's commit time (the
	// outcome's time: inbox delivery and the applier's transaction), and
	// from there → confirmed (the frame's fsync, shipping, applying).
	var stMu sync.Mutex
	var toLegacy, fromLegacy []time.Duration
	// one submits a command and waits for its outcome; it returns the
	// round trip.
	one := func(b *testing.B, id string) time.Duration {
		start := time.Now()
		req := api.CommandRequest{ID: id, Table: table, Key: id, Op: "insert", After: json.RawMessage(`{"qty":1,"sku":"A-1001","price":1999}`)}
		for {
			if _, err := cl.SubmitCommand(context.Background(), req); err != nil {
				b.Errorf("submit %s: %v", id, err)
				return 0
			}
			for {
				c, err := cl.Command(context.Background(), id, 10*time.Second)
				if err != nil {
					b.Errorf("command %s: %v", id, err)
					return 0
				}
				if c.State == "applied" {
					end := time.Now()
					if c.Time != nil && c.Submitted != nil {
						stMu.Lock()
						toLegacy = append(toLegacy, c.Time.Sub(*c.Submitted))
						fromLegacy = append(fromLegacy, end.Sub(*c.Time))
						stMu.Unlock()
					}
					return end.Sub(start)
				}
				if c.State != "pending" {
					b.Errorf("command %s: %s %q", id, c.State, c.Reason)
					return 0
				}
				// Pending after 10 s: submitted again, as a service
				// does (receiver/README.md), and counted.
				resubmits.Add(1)
				break
			}
		}
	}
	// CPU per command: this process (receiver, agent, applier, shipper,
	// NATS, the services' HTTP clients) and PostgreSQL's processes, so
	// that the ceiling on dedicated cores can be worked out on a shared
	// machine.
	var cpu0, pg0 time.Duration
	cpuStart := func() { cpu0, pg0 = selfCPU(), pgCPU(rg.cluster.Pid()) }
	report := func(b *testing.B, lat []time.Duration, elapsed time.Duration) {
		b.ReportMetric(float64((selfCPU()-cpu0).Microseconds())/1000/float64(len(lat)), "cpu-ms/command")
		b.ReportMetric(float64((pgCPU(rg.cluster.Pid())-pg0).Microseconds())/1000/float64(len(lat)), "pg-cpu-ms/command")
		qs := func(lat []time.Duration, p float64) float64 {
			if len(lat) == 0 {
				return 0
			}
			slices.Sort(lat)
			return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
		}
		q := func(p float64) float64 { return qs(lat, p) }
		b.ReportMetric(q(0.50), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		stMu.Lock()
		b.ReportMetric(qs(toLegacy, 0.5), "p50-to-legacy-ms")
		b.ReportMetric(qs(fromLegacy, 0.5), "p50-from-legacy-ms")
		toLegacy, fromLegacy = toLegacy[:0], fromLegacy[:0]
		stMu.Unlock()
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "commands/s")
		if n := resubmits.Swap(0); n > 0 {
			b.Logf("%d commands were still pending after 10 s and submitted again", n)
		}
	}
	// many submits the commands ids in one request and waits for them all
	// in one; it returns the round trip (every command's).
	many := func(b *testing.B, ids []string) time.Duration {
		start := time.Now()
		reqs := make([]api.CommandRequest, len(ids))
		for i, id := range ids {
			reqs[i] = api.CommandRequest{ID: id, Table: table, Key: id, Op: "insert", After: json.RawMessage(`{"qty":1,"sku":"A-1001","price":1999}`)}
		}
		for {
			if _, err := cl.SubmitCommands(context.Background(), reqs); err != nil {
				b.Errorf("submit %s...: %v", ids[0], err)
				return 0
			}
			cs, err := cl.Commands(context.Background(), ids, 10*time.Second)
			if err != nil {
				b.Errorf("commands %s...: %v", ids[0], err)
				return 0
			}
			end := time.Now()
			pending := 0
			for _, c := range cs {
				switch c.State {
				case "applied":
					if c.Time != nil && c.Submitted != nil {
						stMu.Lock()
						toLegacy = append(toLegacy, c.Time.Sub(*c.Submitted))
						fromLegacy = append(fromLegacy, end.Sub(*c.Time))
						stMu.Unlock()
					}
				case "pending":
					pending++
				default:
					b.Errorf("command %s: %s %q", c.ID, c.State, c.Reason)
					return 0
				}
			}
			if pending == 0 {
				return end.Sub(start)
			}
			resubmits.Add(int64(pending))
		}
	}
	warm := func(b *testing.B) {
		for i := range 50 {
			one(b, fmt.Sprintf("warm-%d-%d", run, i))
		}
		stMu.Lock()
		toLegacy, fromLegacy = toLegacy[:0], fromLegacy[:0]
		stMu.Unlock()
	}

	b.Run("rate=1000", func(b *testing.B) {
		run++
		warm(b)
		lat := make([]time.Duration, b.N)
		var wg sync.WaitGroup
		b.ResetTimer()
		cpuStart()
		start := time.Now()
		for i := range b.N {
			if d := time.Until(start.Add(time.Duration(i) * time.Millisecond)); d > 0 {
				time.Sleep(d)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				lat[i] = one(b, fmt.Sprintf("r%d-%d", run, i))
			}()
		}
		wg.Wait()
		report(b, lat, time.Since(start))
	})

	b.Run("max", func(b *testing.B) {
		run++
		warm(b)
		const services = 256
		lat := make([]time.Duration, b.N)
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		cpuStart()
		start := time.Now()
		for range services {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= b.N {
						return
					}
					lat[i] = one(b, fmt.Sprintf("m%d-%d", run, i))
				}
			}()
		}
		wg.Wait()
		report(b, lat, time.Since(start))
	})

	b.Run("batch=100", func(b *testing.B) {
		run++
		warm(b)
		const services, batch = 32, 100
		lat := make([]time.Duration, b.N)
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		cpuStart()
		start := time.Now()
		for range services {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(batch)) - batch
					if i >= b.N {
						return
					}
					ids := make([]string, 0, batch)
					for j := i; j < min(i+batch, b.N); j++ {
						ids = append(ids, fmt.Sprintf("b%d-%d", run, j))
					}
					d := many(b, ids)
					for j := range ids {
						lat[i+j] = d
					}
				}
			}()
		}
		wg.Wait()
		report(b, lat, time.Since(start))
	})
}

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pgCPU is the CPU time of the PostgreSQL postmaster pid and its children
// (backends, WAL writer, checkpointer), from /proc (0 elsewhere).
func pgCPU(pid int) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var ticks int64
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state,
		// ppid, ..., utime (14th field overall), stime (15th).
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b)[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if n != pid && ppid != pid {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + st
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
