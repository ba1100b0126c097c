package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

var (
	ferryBinOnce sync.Once
	ferryBin     string
	ferryBinErr  error
)

// buildFerry builds the ferry binary once per test binary run.
func buildFerry(t *testing.T) string { return buildFerryB(t) }

func buildFerryB(t testing.TB) string {
	t.Helper()
	ferryBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-bin-")
		if err != nil {
			ferryBinErr = err
			return
		}
		ferryBin = filepath.Join(dir, "ferry")
		out, err := exec.Command("go", "build", "-o", ferryBin, ".").CombinedOutput()
		if err != nil {
			ferryBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if ferryBinErr != nil {
		t.Fatal(ferryBinErr)
	}
	return ferryBin
}

func freeAddr(t *testing.T) string { return freeAddrB(t) }

// freePort returns a free loopback address and its port, for a server that
// must listen on a known port (to restart on it).
func freePort(t *testing.T) (addr string, port int) {
	t.Helper()
	addr = freeAddr(t)
	_, portText, _ := strings.Cut(addr, ":")
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	return addr, port
}

func freeAddrB(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func receiverStatusOf(base string) (api.Status, error) {
	var st api.Status
	resp, err := http.Get(base + "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// TestReceiveKill9MidApply kills the receiver process with SIGKILL while it
// applies a pre-filled stream, several times, and checks that the store it
// ends with holds every change exactly once.
func TestReceiveKill9MidApply(t *testing.T) {
	bin := buildFerry(t)
	srv := wiretest.StartServer(t)
	_, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")

	const ntx, per = 30000, 5 // 150,000 changes of ~200 bytes
	pad := strings.Repeat("p", 150)
	txs := make([]format.Tx, ntx)
	for i := range txs {
		txs[i].CommitTime = time.Now().UnixNano()
		for j := 0; j < per; j++ {
			txs[i].Changes = append(txs[i].Changes, format.Change{Table: "t", Op: format.OpUpsert,
				Key: fmt.Appendf(nil, "k%06d-%d", i, j), After: fmt.Appendf(nil, `{"i":%d,"j":%d,"p":%q}`, i, j, pad)})
		}
	}
	segDir := t.TempDir()
	wiretest.WriteSegments(t, segDir, "legacy", txs, 8000)
	msgs := wiretest.Messages(t, segDir, "legacy", 64<<10)
	pub := &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}
	if _, err := pub.Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	const total = ntx * per

	data := t.TempDir()
	addr := freeAddr(t)
	base := "http://" + addr
	start := func(i int) *exec.Cmd {
		logf, err := os.Create(filepath.Join(data, fmt.Sprintf("receive-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "receive", "--nats", srv.URL, "--data", filepath.Join(data, "d"), "--http", addr, "--log-level", "debug")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
		return cmd
	}
	applied := func() uint64 {
		st, err := receiverStatusOf(base)
		if err != nil || len(st.Sources) == 0 {
			return 0
		}
		return st.Sources[0].Changes
	}

	killedMid := 0
	prev := uint64(0)
	for round := 0; round < 6 && prev < total; round++ {
		cmd := start(round)
		// Kill once it applied some more, before it finishes if we can.
		deadline := time.Now().Add(60 * time.Second)
		for {
			n := applied()
			if n > prev+10000 || n == total {
				prev = n
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: receiver stuck at %d changes; log in %s", round, n, data)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if prev < total {
			killedMid++
		}
	}
	if killedMid == 0 {
		t.Fatal("never killed the receiver before it finished: the test proves nothing (make the stream bigger)")
	}
	t.Logf("killed the receiver %d times mid-apply", killedMid)

	cmd := start(99)
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	waitUntil := time.Now().Add(60 * time.Second)
	for applied() != total {
		if time.Now().After(waitUntil) {
			t.Fatalf("after the kills: %d changes applied, want %d", applied(), total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every change exactly once, in order, ids dense; every row present.
	seen := make(map[string]bool, total)
	var after uint64
	for {
		var page struct {
			Changes []api.ChangeJSON
			Next    uint64
		}
		resp, err := http.Get(fmt.Sprintf("%s/v1/changes?after=%d&limit=10000", base, after))
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Changes) == 0 {
			break
		}
		for _, c := range page.Changes {
			if c.ID != after+1 {
				t.Fatalf("change id %d follows %d: the log has a hole or a repeat", c.ID, after)
			}
			after = c.ID
			v := fmt.Sprintf("%d:%d:%d", c.Version.Segment, c.Version.Offset, c.Version.Index)
			if seen[v] {
				t.Fatalf("change %s applied twice (ids ...%d)", v, c.ID)
			}
			seen[v] = true
			i, j := (c.ID-1)/per, (c.ID-1)%per
			if want := fmt.Sprintf("k%06d-%d", i, j); c.Key != want {
				t.Fatalf("change %d is key %s, want %s: out of order", c.ID, c.Key, want)
			}
		}
	}
	if len(seen) != total {
		t.Fatalf("%d distinct changes in the log, want %d", len(seen), total)
	}
	var rows struct{ Rows []api.RowJSON }
	resp, err := http.Get(base + "/v1/tables/t/rows?prefix=k029999-&limit=10")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&rows)
	resp.Body.Close()
	if len(rows.Rows) != per {
		t.Fatalf("last transaction's rows: %d, want %d", len(rows.Rows), per)
	}
}

func TestReceiveFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"NoData", []string{"receive", "--nats", "nats://127.0.0.1:1"}, "--data DIR is required"},
		{"BadSource", []string{"receive", "--data", t.TempDir(), "--source", "a.b", "--nats", "nats://127.0.0.1:1"}, "invalid source name"},
		{"BadWebhook", []string{"receive", "--data", t.TempDir(), "--webhook", "ftp://x", "--nats", "nats://127.0.0.1:1"}, "webhook URL"},
		{"NoStoreToCheckpoint", []string{"receive", "--data", t.TempDir(), "--checkpoint", filepath.Join(t.TempDir(), "ck")}, "no store at"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCmd(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// A checkpoint of a stopped receiver's store seeds a new one.
func TestReceiveCheckpointAction(t *testing.T) {
	data := t.TempDir()
	st, err := store.Open(filepath.Join(data, "store"))
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	tx := format.Tx{CommitTime: 1, Changes: []format.Change{{Table: "t", Op: format.OpInsert, Key: []byte("k"), After: []byte(`{}`)}}}
	frame, _ := format.AppendTx(nil, &tx)
	if err := b.ApplyTx("s", 1, 38, 38+int64(len(frame)), 7, &tx, frame); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	st.Close()
	out := filepath.Join(t.TempDir(), "ck")
	if msg, err := runCmd(t, "receive", "--data", data, "--checkpoint", out); err != nil || !strings.Contains(msg, out) {
		t.Fatalf("checkpoint: %q, %v", msg, err)
	}
	st, err = store.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p := st.Position("s"); p.Offset != 38+int64(len(frame)) || p.Changes != 1 {
		t.Fatalf("checkpoint position %+v", p)
	}
	if cs, err := st.Changes(0, 10); err != nil || len(cs) != 1 || string(cs[0].Key) != "k" {
		t.Fatalf("checkpoint change log: %+v, %v", cs, err)
	}
}

// TestReceiveLogFormat: --log-format json makes every log line of the
// receiver a JSON object, as ship's does; a bad format is a usage error.
func TestReceiveLogFormat(t *testing.T) {
	s := startJetStream(t)
	var stderr syncBuffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env, []string{"receive", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats", s.ClientURL(), "--log-format", "json"})
	}()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(stderr.String(), "ferry receive starting"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no start line logged:\n%s", stderr.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("receive: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil {
			t.Errorf("log line %q is not a JSON log record (%v)", line, err)
		}
	}
	if _, err := runCmd(t, "receive", "--data", t.TempDir(), "--log-format", "xml"); err == nil || !strings.Contains(err.Error(), `--log-format "xml": want text or json`) {
		t.Errorf("--log-format xml: %v", err)
	}
}

// TestVersion: ferry --version names the build.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		out, err := runCmd(t, arg)
		if err != nil || !strings.HasPrefix(out, "ferry ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("ferry %s: %q, %v; want \"ferry <version> ... %s\"", arg, out, err, runtime.Version())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a command's logger and a test
// reading it at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
