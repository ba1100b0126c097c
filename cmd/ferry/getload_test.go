package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// getLoad is what an open-loop GET load measured.
type getLoad struct {
	// p50/p99 from the moment each request was due: waiting for a free
	// connection counts (no coordinated omission), and so does the pacer's
	// own lateness: time.Sleep on the 2-core VM overshoots by ~1 ms
	// whatever the wait, so requests leave in bursts of ~10.
	p50, p99 float64
	// queuedP50/queuedP99 from the moment the pacer handed each request
	// over: waiting for a free connection counts, the pacer's timer does
	// not.
	queuedP50, queuedP99 float64
	// sentP50/sentP99 from the moment each request was written.
	sentP50, sentP99 float64
	achieved         float64 // answers per second
	errs             int
}

// loadGETRaw sends rate GET /v1/tables/orders/rows/{random key} per second
// for d over conns keep-alive connections to addr: one goroutine per
// connection writes the request and parses the answer (http.ReadResponse),
// the way wrk does, so that the load generator's own scheduling (net/http's
// Transport hands every request between goroutines) weighs as little as
// possible on the latency it reports.
func loadGETRaw(addr string, rate int, d time.Duration, keys, conns int) getLoad {
	type job struct {
		due, queued time.Time
		key         int
	}
	jobs := make(chan job, rate*int(d/time.Second+1))
	var mu sync.Mutex
	var due, queued, sent []time.Duration
	var errs int
	var wg sync.WaitGroup
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ldue, lqueued, lsent []time.Duration
			nerr := 0
			defer func() {
				mu.Lock()
				due, queued, sent = append(due, ldue...), append(queued, lqueued...), append(sent, lsent...)
				errs += nerr
				mu.Unlock()
			}()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				for range jobs {
					nerr++
				}
				return
			}
			defer conn.Close()
			br, bw := bufio.NewReader(conn), bufio.NewWriter(conn)
			req := make([]byte, 0, 128)
			for j := range jobs {
				t := time.Now()
				req = fmt.Appendf(req[:0], "GET /v1/tables/orders/rows/order-%07d HTTP/1.1\r\nHost: %s\r\n\r\n", j.key, addr)
				bw.Write(req)
				if err := bw.Flush(); err != nil {
					nerr++
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					nerr++
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 && resp.StatusCode != 404 {
					nerr++
				}
				now := time.Now()
				ldue, lqueued, lsent = append(ldue, now.Sub(j.due)), append(lqueued, now.Sub(j.queued)), append(lsent, now.Sub(t))
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for n := 0; ; n++ {
		at := start.Add(time.Duration(n) * interval)
		if at.Sub(start) >= d {
			break
		}
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		jobs <- job{due: at, queued: time.Now(), key: rng.IntN(keys)}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	out := getLoad{errs: errs}
	if len(due) == 0 {
		return out
	}
	slices.Sort(due)
	slices.Sort(queued)
	slices.Sort(sent)
	pct := func(l []time.Duration, p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) }
	out.p50, out.p99 = pct(due, 0.50), pct(due, 0.99)
	out.sentP50, out.sentP99 = pct(sent, 0.50), pct(sent, 0.99)
	out.queuedP50, out.queuedP99 = pct(queued, 0.50), pct(queued, 0.99)
	out.achieved = float64(len(due)) / elapsed.Seconds()
	return out
}
