package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/faults"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bins are the ferry and nats-server binaries, built once by TestMain.
var bins faults.Binaries

// legacyEnv, when set, makes the test binary a legacy writer process (so that
// a test can kill -9 a writer) configured by the variable's JSON.
const legacyEnv = "FERRY_FAULTS_LEGACY"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(legacyEnv); cfg != "" {
		os.Exit(legacyMain(cfg))
	}
	if cfg := os.Getenv(writebackEnv); cfg != "" {
		os.Exit(writebackMain(cfg))
	}
	dir, err := os.MkdirTemp("", "ferry-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	bins, err = faults.Build(ctx, dir)
	cancel()
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func legacyMain(cfg string) int {
	var l faults.Legacy
	if err := json.Unmarshal([]byte(cfg), &l); err != nil {
		fmt.Fprintln(os.Stderr, "legacy config:", err)
		return 2
	}
	st, err := l.Run(context.Background())
	fmt.Fprintf(os.Stderr, "legacy: %d transactions, %d changes\n", st.Transactions, st.Changes)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// full reports whether the full suite runs (FERRY_FAULTS=full), else the
// fast subset with small sizes.
func full() bool { return os.Getenv("FERRY_FAULTS") == "full" }

// size picks the fast or the full figure.
func size(fast, fullSize int) int {
	if full() {
		return fullSize
	}
	return fast
}

const streamName = "FERRY"

// rig is one run of the suite: change files, nats-server processes, shippers
// and receivers, all under one temporary directory.
type rig struct {
	t        *testing.T
	root     string
	changes  string
	nats     []*faults.NATSServer
	shippers map[string]*faults.Process
	replicas int
}

func newRig(t *testing.T, natsNodes int, opts ...faults.NATSOption) *rig {
	t.Helper()
	root := t.TempDir()
	r := &rig{t: t, root: root, changes: filepath.Join(root, "changes"), shippers: map[string]*faults.Process{}, replicas: 1}
	if err := os.MkdirAll(r.changes, 0o755); err != nil {
		t.Fatal(err)
	}
	servers, err := faults.NewNATS(bins.NATSServer, filepath.Join(root, "nats"), natsNodes, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r.nats = servers
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Kill() })
	}
	if err := r.waitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FERRY_FAULTS_LOGS") != "" {
			r.dumpLogs()
		}
	})
	return r
}

func (r *rig) urls() string { return faults.URLs(r.nats) }

// js connects a JetStream client for the test's own checks.
func (r *rig) js() (*nats.Conn, jetstream.JetStream) {
	r.t.Helper()
	nc, err := nats.Connect(r.urls(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		r.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	return nc, js
}

// waitJetStream waits until JetStream answers (a cluster has a meta leader).
func (r *rig) waitJetStream(ctx context.Context) error {
	for {
		nc, err := nats.Connect(r.urls(), nats.ReconnectBufSize(-1))
		if err == nil {
			js, _ := jetstream.New(nc)
			actx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = js.AccountInfo(actx)
			cancel()
			nc.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream not ready: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// createStream creates the stream the shippers publish to, with replicas,
// as the shippers would (they check it).
func (r *rig) createStream(replicas int) {
	r.t.Helper()
	r.replicas = replicas
	nc, js := r.js()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: []string{"ferry.>"},
			Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Replicas: replicas, Duplicates: 2 * time.Minute})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			r.t.Fatalf("creating stream: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// shipper returns (creating it the first time) the shipper of source.
func (r *rig) shipper(source string, extra ...string) *faults.Process {
	if p := r.shippers[source]; p != nil {
		return p
	}
	args := append([]string{"ship", "--dir", r.changes, "--source", source, "--nats", r.urls(), "--stream", streamName,
		"--lease-ttl", "3s", "--replicas", fmt.Sprint(r.replicas)}, extra...)
	p := &faults.Process{Name: "ship-" + source, Bin: bins.Ferry, Args: args, Log: filepath.Join(r.root, "ship-"+source+".log"), Restart: 500 * time.Millisecond}
	r.shippers[source] = p
	r.t.Cleanup(func() { p.Kill() })
	return p
}

// receiver is a `ferry receive` process and its HTTP API.
type receiver struct {
	*faults.Process
	data string
	http string
}

func (r *rig) receiver(name string, extra ...string) *receiver {
	r.t.Helper()
	port, err := faults.FreePort()
	if err != nil {
		r.t.Fatal(err)
	}
	rc := &receiver{data: filepath.Join(r.root, name), http: fmt.Sprintf("127.0.0.1:%d", port)}
	args := append([]string{"receive", "--nats", r.urls(), "--data", rc.data, "--http", rc.http, "--stream", streamName, "--keep-changes", "0"}, extra...)
	rc.Process = &faults.Process{Name: name, Bin: bins.Ferry, Args: args, Log: filepath.Join(r.root, name+".log"), Restart: 500 * time.Millisecond}
	r.t.Cleanup(func() { rc.Kill() })
	return rc
}

func (rc *receiver) client() *check.HTTPReceiver { return check.NewHTTPReceiver("http://" + rc.http) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitCaughtUp waits until the receiver has applied every change of the
// truth's sources (by its own status), and returns how long that took.
func waitCaughtUp(t *testing.T, rc *receiver, truth *check.Truth, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c := rc.client()
	var last map[string]check.Applied
	for {
		st, err := c.Status(ctx)
		if err == nil {
			last = st
			done := true
			for name, src := range truth.Sources {
				if st[name].Changes < uint64(src.Changes) {
					done = false
				}
			}
			if done {
				return time.Since(start)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("receiver %s not caught up after %v: applied %v, want %s (last error %v)", rc.Name, limit, last, summary(truth), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func summary(truth *check.Truth) string {
	var parts []string
	for _, name := range truth.SourceNames() {
		s := truth.Sources[name]
		parts = append(parts, fmt.Sprintf("%s: %d changes to %d:%d", name, s.Changes, s.End.Segment, s.End.Offset))
	}
	return strings.Join(parts, ", ")
}

// verify computes the truth from the change files and compares the receiver
// with it; the run fails unless they match exactly.
func verify(t *testing.T, rc *receiver, truth *check.Truth) *check.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := check.Compare(ctx, truth, rc.client(), check.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	return rep
}

// dumpLogs prints the tail of every process log of a failed run.
func (r *rig) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(r.root, "*.log"))
	more, _ := filepath.Glob(filepath.Join(r.root, "nats", "*", "nats.log"))
	for _, l := range append(logs, more...) {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		r.t.Logf("--- %s (tail) ---\n%s", l, b)
	}
}
