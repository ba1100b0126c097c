package receiver_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/prometheus/client_golang/prometheus"
)

// TestOptionsInvalid: every refused option wraps ErrInvalidOption, as the
// shipper's do, so that a program embedding the receiver can tell a
// configuration error from a run-time one.
func TestOptionsInvalid(t *testing.T) {
	for name, opt := range map[string]receiver.Option{
		"NilNATS":           receiver.WithNATS(nil),
		"EmptyDataDir":      receiver.WithDataDir(""),
		"EmptyStream":       receiver.WithStream(""),
		"EmptyPrefix":       receiver.WithSubjectPrefix(""),
		"BadSource":         receiver.WithSources("a.b"),
		"ZeroReadyLag":      receiver.WithReadyLag(0),
		"BadWebhook":        receiver.WithWebhook("ftp://x", ""),
		"NoRetention":       receiver.WithChangeLogRetention(0, 0),
		"TinyCache":         receiver.WithCacheSize(1),
		"NilRegistry":       receiver.WithRegistry(nil),
		"NilLogger":         receiver.WithLogger(nil),
		"EmptyListen":       receiver.WithListen(""),
		"EmptyCkptDir":      receiver.WithCheckpointDir(""),
		"TinyBatchBytes":    receiver.WithMaxBatchBytes(1),
		"TinyMaxTx":         receiver.WithMaxTxBytes(1),
		"ZeroTombstones":    receiver.WithTombstoneRetention(0),
		"ShortCmdRetention": receiver.WithCommandRetention(time.Minute),
		"ZeroProgress":      receiver.WithProgressInterval(0),
		"BadOrigin":         receiver.WithCommands("a.b", map[string]string{"t": "s"}),
		"NoCmdTables":       receiver.WithCommands("svc", nil),
		"BadCmdTable":       receiver.WithCommands("svc", map[string]string{"t": "a.b"}),
		"EmptyCmdStream":    receiver.WithCommandStream("", "p"),
		"ZeroCmdImage":      receiver.WithMaxCommandImage(0),
		"BadExclude":        receiver.WithExcludeOrigins("a b"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := receiver.New(opt); !errors.Is(err, receiver.ErrInvalidOption) {
				t.Fatalf("New: %v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := receiver.New(); !errors.Is(err, receiver.ErrInvalidOption) {
		t.Fatalf("New without NATS: %v, want ErrInvalidOption", err)
	}
}

// TestStatusHasNoSideEffects: reading the status (what GET /v1/status and
// /readyz do) leaves the metrics alone; the receiver's own loop refreshes
// the lag gauge.
func TestStatusHasNoSideEffects(t *testing.T) {
	e := newEnv(t)
	data := t.TempDir()
	st, err := store.Open(filepath.Join(data, receiver.StoreDir))
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	tx := format.Tx{CommitTime: time.Now().Add(-time.Hour).UnixNano(), Changes: []format.Change{{Table: "t", Op: format.OpInsert, Key: []byte("k"), After: []byte(`{}`)}}}
	frame, _ := format.AppendTx(nil, &tx)
	if err := b.ApplyTx("s", 1, 38, 38+int64(len(frame)), 7, &tx, frame); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	st.Close()

	reg := prometheus.NewRegistry()
	r, err := receiver.New(receiver.WithNATS(e.nc), receiver.WithDataDir(data), receiver.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	status := r.Status()
	// Applied an hour ago, nothing more in the stream: not lagging.
	if len(status.Sources) != 1 || status.Sources[0].AliveAt == nil || time.Since(*status.Sources[0].AliveAt) < 50*time.Minute || status.Sources[0].LagSeconds != 0 {
		t.Fatalf("status %+v, want source s applied an hour ago, lag 0", status.Sources)
	}
	if n := lagSamples(t, reg); n != 0 {
		t.Fatalf("Status() set %d lag gauge(s); reading the status must not change metrics", n)
	}
}

func lagSamples(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ferry_receiver_lag_seconds" {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// TestLagGaugeRefreshed: a running receiver's loop keeps the lag gauge.
func TestLagGaugeRefreshed(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "g", genTxs(5, 1, "t", "g"), 0, 4096)
	e.publish(msgs...)
	reg := prometheus.NewRegistry()
	run := e.start(t.TempDir(), receiver.WithRegistry(reg))
	run.waitApplied(t, "g", msgs[len(msgs)-1])
	waitFor(t, "the lag gauge of source g", 60*time.Second, func() bool { return lagSamples(t, reg) == 1 })
}

// TestCheckpointResponseIsJSON: the checkpoint action's answer is JSON
// whatever the path holds (it was built with Go's %q, whose \x7f escape is
// not JSON).
func TestCheckpointResponseIsJSON(t *testing.T) {
	e := newEnv(t)
	ckdir := filepath.Join(t.TempDir(), "odd\x7fname")
	run := e.start(t.TempDir(), receiver.WithCheckpointDir(ckdir))
	resp, err := http.Post(run.http.URL+"/v1/checkpoint", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Checkpoint   string `json:"checkpoint"`
		StoreDirName string `json:"store_dir_name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("checkpoint answer is not JSON: %v", err)
	}
	if resp.StatusCode != http.StatusOK || filepath.Dir(got.Checkpoint) != ckdir || got.StoreDirName != receiver.StoreDir {
		t.Fatalf("checkpoint answer %d %+v, want a checkpoint under %q", resp.StatusCode, got, ckdir)
	}
}

// TestProgressLogged: a running receiver logs at info level, per source,
// what it applied and where it is.
func TestProgressLogged(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "p", genTxs(10, 2, "t", "p"), 0, 4096)
	e.publish(msgs...)
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	run := e.start(t.TempDir(), receiver.WithLogger(log), receiver.WithProgressInterval(50*time.Millisecond))
	run.waitApplied(t, "p", msgs[len(msgs)-1])
	end := msgs[len(msgs)-1].Batch
	want := fmt.Sprintf("msg=applying source=p state=ok applied=%d:%d", end.Segment, end.To)
	waitFor(t, "a progress line at the end", 60*time.Second, func() bool { return strings.Contains(logs.String(), want) })
	run.stop()
	total := 0
	for _, m := range regexp.MustCompile(`msg=applying source=p \S+ \S+ changes=(\d+)`).FindAllStringSubmatch(logs.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	if total != 20 {
		t.Errorf("progress lines count %d changes, want the 20 applied:\n%s", total, logs.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
