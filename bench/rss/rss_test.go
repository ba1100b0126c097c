//go:build rss

// Package rss measures the peak RSS (VmHWM) of `ferry receive`, `ferry
// ship` and `ferry inspect` under the memory attacks of issue 14: forged
// split parts, a message of many tiny changes, huge pages of rows (one and
// several at once) and a 1 GiB sparse tail. It runs the ferry binary named
// by FERRY_BIN (build one per commit to compare) and prints one line per
// attack:
//
//	go build -o /tmp/ferry-new ./cmd/ferry
//	FERRY_BIN=/tmp/ferry-new go test -tags rss -v -run RSS ./bench/rss/
//
// It is not part of `make test` (the build tag): it writes ~400 MiB and
// takes a minute or two.
package rss

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

func bin(t *testing.T) string {
	b := os.Getenv("FERRY_BIN")
	if b == "" {
		t.Skip("FERRY_BIN not set: the ferry binary to measure")
	}
	return b
}

// hwm returns the VmHWM of pid in bytes.
func hwm(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

type proc struct {
	cmd *exec.Cmd
	out *os.File
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin(t), args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); out.Close() })
	return p
}

// settle waits until p's VmHWM has not grown for quiet (at least min, at
// most max in all) and returns it.
func (p *proc) settle(min, quiet, max time.Duration) int64 {
	begin := time.Now()
	last, since := int64(0), time.Now()
	for {
		v := hwm(p.cmd.Process.Pid)
		if v < 0 {
			return last // exited
		}
		if v > last {
			last, since = v, time.Now()
		}
		el := time.Since(begin)
		if el > max || el > min && time.Since(since) > quiet {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHTTP(t *testing.T, addr string) {
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return
		}
	}
	t.Fatalf("receiver at %s never answered", addr)
}

func report(t *testing.T, attack, process string, v int64) {
	t.Logf("RSS %-48s %-8s peak %6.0f MiB", attack, process, float64(v)/(1<<20))
}

// receiver starts a receiver on a fresh stream and returns it, its HTTP
// address and a publisher.
func receiver(t *testing.T) (*proc, string, *wiretest.Publisher) {
	srv := wiretest.StartServer(t)
	_, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, "recv", "receive", "--nats", srv.URL, "--data", t.TempDir(), "--http", addr, "--stream", "FERRY")
	waitHTTP(t, addr)
	return p, addr, &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}
}

// status logs what the receiver's status says of its sources.
func status(t *testing.T, addr string) {
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Log(err)
		return
	}
	defer resp.Body.Close()
	var st struct {
		Sources []struct {
			Source, State, Error string
			Changes              uint64
		}
	}
	json.NewDecoder(resp.Body).Decode(&st)
	for _, s := range st.Sources {
		e := s.Error
		if len(e) > 160 {
			e = e[:160]
		}
		t.Logf("  source %s: %s, %d changes applied %s", s.Source, s.State, s.Changes, e)
	}
}

func TestRSSForgedSplitParts(t *testing.T) {
	p, _, pub := receiver(t)
	base := p.settle(time.Second, time.Second, 5*time.Second)
	raw := make([]byte, 4<<20)
	ctx := context.Background()
	for i := range 200 { // 800 MiB of parts of a frame declaring 4 GiB, ~100 KB on the wire
		m := wiretest.Msg{Raw: raw, Batch: wire.Batch{Source: "x", Segment: 1, From: 40, To: 40 + 4<<30, Frames: 1, Changes: 1,
			RawLen: len(raw), Part: i, Parts: 1000}}
		if _, err := pub.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	report(t, "idle", "receive", base)
	report(t, "forged split parts (200 x 4 MiB raw, 4 GiB span)", "receive", p.settle(5*time.Second, 5*time.Second, time.Minute))
}

func TestRSSTinyChanges(t *testing.T) {
	p, addr, pub := receiver(t)
	var raw []byte
	tx := format.Tx{CommitTime: 1_700_000_000_000_000_000}
	frames, changes := 0, 0
	for len(raw) < 60<<20 {
		tx.Changes = tx.Changes[:0]
		for j := 0; j < 1000; j++ {
			tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpUpsert,
				Key: binary.BigEndian.AppendUint32(nil, uint32(j)), After: []byte("1")})
		}
		var err error
		if raw, err = format.AppendTx(raw, &tx); err != nil {
			t.Fatal(err)
		}
		frames++
		changes += 1000
	}
	m := wiretest.Msg{Raw: raw, Batch: wire.Batch{Source: "x", Segment: 1, From: 40, To: 40 + int64(len(raw)),
		Frames: frames, Changes: changes, RawLen: len(raw), Parts: 1}}
	body, _ := pub.Body(m)
	if _, err := pub.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	report(t, fmt.Sprintf("tiny changes (%d KB msg, %d MiB raw)", len(body)>>10, len(raw)>>20), "receive", p.settle(5*time.Second, 5*time.Second, 2*time.Minute))
	status(t, addr)
}

func TestRSSHugePages(t *testing.T) {
	p, addr, pub := receiver(t)
	const rows, size = 40, 8 << 20
	dir := t.TempDir()
	txs := make([]format.Tx, rows)
	val := []byte(`"` + strings.Repeat("a", size-2) + `"`)
	for i := range txs {
		txs[i] = format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{{Table: "t", Op: format.OpUpsert,
			Key: []byte(fmt.Sprintf("k%03d", i)), After: val}}}
	}
	wiretest.WriteSegments(t, dir, "big", txs, 0)
	msgs := wiretest.Messages(t, dir, "big", 1<<20)
	if _, err := pub.Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	// Wait until every row is applied.
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(fmt.Sprintf("http://%s/v1/tables/t/rows/k%03d", addr, rows-1))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatal("rows never applied")
		}
	}
	applied := p.settle(time.Second, 2*time.Second, 10*time.Second)
	report(t, fmt.Sprintf("%d rows of 8 MiB applied", rows), "receive", applied)
	page := func() int64 {
		resp, err := http.Get("http://" + addr + "/v1/tables/t/rows?limit=100")
		if err != nil {
			t.Error(err)
			return 0
		}
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		return n
	}
	n := page()
	report(t, fmt.Sprintf("one page of limit=100 (%d MiB answered)", n>>20), "receive", p.settle(time.Second, 2*time.Second, time.Minute))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); page() }()
	}
	wg.Wait()
	report(t, "4 concurrent pages of limit=100", "receive", p.settle(time.Second, 2*time.Second, time.Minute))
}

// sparseDir writes a short segment and extends it by a 1 GiB sparse tail.
func sparseDir(t *testing.T, live bool) string {
	dir := t.TempDir()
	txs := []format.Tx{{CommitTime: time.Now().UnixNano(), Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("k"), After: []byte("1")}}}}
	writeSegment(t, dir, &txs[0])
	// Drop the seal (the last frame): the segment is live, its tail 1 GiB
	// of zeros.
	path := filepath.Join(dir, format.SegmentName("s", 1))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := format.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	last := h.Len
	for off := h.Len; off < len(b); {
		n := format.FrameLen(b[off:])
		if n <= 0 || off+n > len(b) {
			break
		}
		last, off = off, off+n
	}
	if err := os.Truncate(path, int64(last)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(last)+1<<30); err != nil {
		t.Fatal(err)
	}
	if !live {
		// A later segment: the sparse one is abandoned, its tail must be
		// classified (torn or corrupt), not waited for.
		writeSegment(t, dir, &txs[0])
	}
	return dir
}

// writeSegment writes tx into a new segment of source "s" in dir, sealed by
// the writer's Close.
func writeSegment(t *testing.T, dir string, tx *format.Tx) {
	t.Helper()
	w, err := format.OpenWriter(dir, "s", format.WithSync(format.SyncNone, 0), format.WithHeartbeat(0), format.WithMaxSegmentAge(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(tx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRSSSparseTail(t *testing.T) {
	for _, live := range []bool{true, false} {
		what := "live segment"
		if !live {
			what = "segment before another"
		}
		dir := sparseDir(t, live)
		p := start(t, "inspect", "inspect", "--verify", dir)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		v := int64(0)
	poll:
		for {
			if x := hwm(p.cmd.Process.Pid); x > v {
				v = x
			}
			select {
			case <-done:
				break poll
			case <-time.After(5 * time.Millisecond):
			}
		}
		report(t, "1 GiB sparse tail ("+what+"), inspect --verify", "inspect", v)
		srv := wiretest.StartServer(t)
		sh := start(t, "ship", "ship", "--dir", dir, "--source", "s", "--nats", srv.URL, "--stream", "FERRY")
		report(t, "1 GiB sparse tail ("+what+"), ship", "ship", sh.settle(10*time.Second, 5*time.Second, time.Minute))
	}
}
