package shipper_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestGroup runs the multi-source path `ferry ship` runs: JetStream is not
// there when it starts (the stream is created once it is), one source
// ships every frame exactly once while the other stops on a corrupt frame,
// and health says which stopped and why; Run's error names it.
func TestGroup(t *testing.T) {
	port := freePort(t)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	good, bad := t.TempDir(), t.TempDir()
	w, err := format.OpenWriter(good, "good", format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 0, 50, 3, 200)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	end := endOf(t, good, "good")
	w, err = format.OpenWriter(bad, "bad", format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 0, 1, 1, 100)
	second, err := w.Commit(tx(1))
	if err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 2, 3, 1, 100)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	corrupt(t, filepath.Join(bad, format.SegmentName("bad", second.Segment)), second.Offset+20)

	g, err := shipper.NewGroup(nc, jsclient.Config{LeaseTTL: 2 * time.Second},
		[]shipper.SourceConfig{{Name: "good", Dir: good}, {Name: "bad", Dir: bad}},
		shipper.WithPollInterval(50*time.Millisecond), shipper.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	health := httptest.NewServer(http.HandlerFunc(g.ServeHealth))
	defer health.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	if code, body := get(t, health.URL); code != http.StatusServiceUnavailable || !strings.Contains(body, "connecting to JetStream") {
		t.Fatalf("health before JetStream runs: %d %q, want 503 connecting", code, body)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer s.Shutdown()

	// The bad source stops; the good one ships everything.
	var body string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var code int
		code, body = get(t, health.URL)
		ships := g.Shippers()
		if code == http.StatusServiceUnavailable && strings.Contains(body, "bad: ") && len(ships) == 2 && !ships[0].Stats().Acked.Less(end) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %d %q; want the bad source stopped and the good one acked to %v", code, body, end)
		}
	}
	if !strings.Contains(body, "stopped sources:") || strings.Contains(body, "good: ") {
		t.Errorf("health %q, want only the bad source named", body)
	}
	checkExact(t, good, "good", readBack(t, nc, "ferry.good"), end)
	cancel()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err == nil || !strings.Contains(err.Error(), "1 of 2 sources stopped on errors: bad: ") {
		t.Fatalf("Run = %v, want it to name the stopped source", err)
	}
}

func TestNewGroupRefuses(t *testing.T) {
	nc, err := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		sources []shipper.SourceConfig
		want    string
	}{
		{"None", nil, "no source"},
		{"MissingDir", []shipper.SourceConfig{{Name: "a", Dir: filepath.Join(dir, "nope")}}, "does not exist"},
		{"Twice", []shipper.SourceConfig{{Name: "a", Dir: dir}, {Name: "a", Dir: dir}}, "given twice"},
		{"BadName", []shipper.SourceConfig{{Name: "a.b", Dir: dir}}, "source name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := shipper.NewGroup(nc, jsclient.Config{}, tc.sources)
			if !errors.Is(err, shipper.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewGroup: %v, want ErrInvalidOption saying %q", err, tc.want)
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// corrupt flips a byte of the file at off.
func corrupt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestGroupLogsProgress: a shipping group logs at info level, per source,
// what it shipped and how far it was acknowledged.
func TestGroupLogsProgress(t *testing.T) {
	_, nc := startServer(t, 0)
	dir := t.TempDir()
	w, err := format.OpenWriter(dir, "orders", format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 0, 20, 2, 100)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	end := endOf(t, dir, "orders")
	var logs lockedBuffer
	g, err := shipper.NewGroup(nc, jsclient.Config{LeaseTTL: 2 * time.Second}, []shipper.SourceConfig{{Name: "orders", Dir: dir}},
		shipper.WithPollInterval(50*time.Millisecond), shipper.WithProgressInterval(50*time.Millisecond),
		shipper.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	want := "msg=shipping source=orders acked=" + end.String()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line %q in:\n%s", want, logs.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The lines count every change once, whichever intervals they fell in.
	total := 0
	for _, m := range regexp.MustCompile(`msg=shipping source=orders \S+ changes=(\d+)`).FindAllStringSubmatch(logs.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	if total != 40 {
		t.Errorf("progress lines count %d changes, want the 40 shipped:\n%s", total, logs.String())
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
