package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func shipFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeSource writes n one-change transactions for source in dir, seals it,
// and returns where its data ends.
func writeSource(t *testing.T, dir, source string, n int) format.Position {
	t.Helper()
	w, err := format.OpenWriter(dir, source, format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		tx := &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{{Table: "t", Op: format.OpUpsert,
			Key: []byte(fmt.Sprint(i)), After: []byte(fmt.Sprintf(`{"i":%d,"s":"%s"}`, i, strings.Repeat("v", 100)))}}}
		if _, err := w.Commit(tx); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := format.ListSegments(dir, source)
	fi, err := os.Stat(segs[len(segs)-1].Path)
	if err != nil {
		t.Fatal(err)
	}
	return format.Position{Segment: segs[len(segs)-1].Segment, Offset: fi.Size()}
}

func TestShipCommandConfigEnvAndMetrics(t *testing.T) {
	s := startJetStream(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	endA := writeSource(t, dirA, "orders", 300)
	endB := writeSource(t, dirB, "billing", 200)
	metrics := shipFreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "ship.yaml")
	yaml := fmt.Sprintf("nats: %s\nstream: SHIPTEST\nmetrics-addr: %s\ncodec: zstd\nsources:\n  - name: orders\n    dir: %s\n  - name: billing\n    dir: %s\n",
		s.ClientURL(), metrics, dirA, dirB)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr,
		Getenv: func(k string) string {
			if k == "FERRY_CODEC" {
				return "s2" // the environment overrides the file
			}
			return ""
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, env, []string{"ship", "--config", cfg, "--log-format", "json"}) }()

	nc, err := nats.Connect(s.ClientURL(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	waitShipped := func(source string, end format.Position) wire.Batch {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			if st, err := js.Stream(ctx, "SHIPTEST"); err == nil {
				if m, err := st.GetLastMsgForSubject(ctx, "ferry."+source); err == nil {
					b, err := wire.ParseHeader(m.Header)
					if err != nil {
						t.Fatal(err)
					}
					if b.Segment == end.Segment && b.To == end.Offset {
						return b
					}
				}
			}
			select {
			case err := <-errc:
				t.Fatalf("ferry ship returned early: %v\n%s", err, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("source %s not shipped to %v\n%s", source, end, stderr.String())
		return wire.Batch{}
	}
	if b := waitShipped("orders", endA); b.Codec != wire.CodecS2 {
		t.Errorf("codec %v, want s2 from FERRY_CODEC", b.Codec)
	}
	waitShipped("billing", endB)

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	// Counters move on acks, which may trail the stream by a moment.
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, body = get("/metrics")
		if strings.Contains(body, `ferry_ship_records_total{source="orders"} 300`) &&
			strings.Contains(body, `ferry_ship_records_total{source="billing"} 200`) {
			break
		}
	}
	for _, want := range []string{
		`ferry_ship_records_total{source="orders"} 300`,
		`ferry_ship_records_total{source="billing"} 200`,
		`ferry_ship_backlog_bytes{source="orders"}`,
		`ferry_ship_publish_seconds_bucket{source="orders"`,
		`ferry_ship_lag_seconds{source="billing"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel() // SIGTERM
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ferry ship after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ferry ship did not stop")
	}
	if !strings.Contains(stderr.String(), `"msg":"shipping"`) {
		t.Errorf("no JSON start log:\n%s", stderr.String())
	}
}

func TestShipCommandRefuses(t *testing.T) {
	s := startJetStream(t)
	nc, err := nats.Connect(s.ClientURL(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "MEM", Subjects: []string{"ferry.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeSource(t, dir, "orders", 1)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"NoSource", []string{"ship", "--nats", s.ClientURL()}, 2, "no source"},
		{"DirWithoutSource", []string{"ship", "--dir", dir, "--nats", s.ClientURL()}, 2, "go together"},
		{"BadCodec", []string{"ship", "--dir", dir, "--source", "orders", "--codec", "lz4"}, 2, "unknown codec"},
		{"BadRetention", []string{"ship", "--dir", dir, "--source", "orders", "--retention", "forever"}, 2, "unknown retention"},
		{"ArchiveWithoutDir", []string{"ship", "--dir", dir, "--source", "orders", "--retention", "archive", "--nats", s.ClientURL()}, 2, "archive directory"},
		// A directory that does not exist is refused at once (even
		// with NATS down), saying so.
		{"MissingDir", []string{"ship", "--dir", filepath.Join(dir, "nope"), "--source", "orders", "--nats", "nats://127.0.0.1:1"}, 2, "does not exist: check the directory (--dir)"},
		{"PasswordWithoutUser", []string{"ship", "--dir", dir, "--source", "orders", "--nats", s.ClientURL(), "--password", "x"}, 1, "--password without --user"},
		{"IncompatibleStream", []string{"ship", "--dir", dir, "--source", "orders", "--stream", "MEM", "--nats", s.ClientURL()}, 1, "storage is Memory"},
		{"NegativeInboxRescan", []string{"ship", "--dir", dir, "--source", "orders", "--nats", s.ClientURL(), "--inbox", filepath.Join(dir, "inbox"), "--inbox-rescan", "-1m"}, 2, "rescan horizon -1m0s is negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			env := &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err := run(ctx, env, tc.args)
			code := 0
			if err != nil {
				code = 1
				var ee *exitError
				if errors.As(err, &ee) {
					code = ee.code
				}
			}
			if code != tc.code || err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
				t.Fatalf("exit %d, err %v; want exit %d and %q\n%s", code, err, tc.code, tc.want, stderr.String())
			}
		})
	}
}
