package shipper_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startServer runs an embedded JetStream server for the test, in-process
// (no port), and returns a connection to it.
func startServer(t testing.TB, maxPayload int32) (*server.Server, *nats.Conn) {
	t.Helper()
	opts := &server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoLog: true, NoSigs: true, MaxPayload: maxPayload}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect("", nats.InProcessServer(s), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return s, nc
}

func newClient(t testing.TB, nc *nats.Conn) *jsclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := jsclient.New(ctx, nc, jsclient.Config{LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatalf("jsclient.New: %v", err)
	}
	return c
}

// running is a Shipper running in the background of a test.
type running struct {
	s    *shipper.Shipper
	errc chan error
}

func startShipper(t testing.TB, st shipper.Stream, dir, source string, opts ...shipper.Option) *running {
	t.Helper()
	opts = append([]shipper.Option{shipper.WithPollInterval(50 * time.Millisecond), shipper.WithLogger(testLogger(t))}, opts...)
	s, err := shipper.New(st, dir, source, opts...)
	if err != nil {
		t.Fatalf("shipper.New: %v", err)
	}
	r := &running{s: s, errc: make(chan error, 1)}
	go func() { r.errc <- s.Run(context.Background()) }()
	t.Cleanup(s.Stop)
	return r
}

// stop stops the shipper and returns Run's error.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.s.Stop()
	select {
	case err := <-r.errc:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	return nil
}

// waitErr waits for Run to fail.
func (r *running) waitErr(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.errc:
		return err
	case <-time.After(d):
		t.Fatalf("Run did not fail within %v (stats %+v)", d, r.s.Stats())
	}
	return nil
}

// waitAcked waits until the shipper acknowledged up to pos.
func (r *running) waitAcked(t testing.TB, pos format.Position, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !r.s.Stats().Acked.Less(pos) {
			return
		}
		select {
		case err := <-r.errc:
			t.Fatalf("Run returned %v before acking %v", err, pos)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("acked %v, want %v within %v", r.s.Stats().Acked, pos, d)
}

// endOf returns where the writer's data ends now: the last segment and its
// size (the writer flushed).
func endOf(t testing.TB, dir, source string) format.Position {
	t.Helper()
	segs, err := format.ListSegments(dir, source)
	if err != nil || len(segs) == 0 {
		t.Fatalf("ListSegments: %v (%d)", err, len(segs))
	}
	last := segs[len(segs)-1]
	fi, err := os.Stat(last.Path)
	if err != nil {
		t.Fatal(err)
	}
	return format.Position{Segment: last.Segment, Offset: fi.Size()}
}

// writeTxs appends n transactions of about size bytes each.
func writeTxs(t testing.TB, w *format.Writer, first, n, changes, size int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		tx := &format.Tx{CommitTime: time.Now().UnixNano(), ID: fmt.Sprint("tx", i)}
		for c := 0; c < changes; c++ {
			after := fmt.Sprintf(`{"id":%d,"c":%d,"name":"customer %d","pad":%q}`, i, c, i, strings.Repeat("x", max(0, size-60)))
			tx.Changes = append(tx.Changes, format.Change{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i, "-", c)), After: []byte(after)})
		}
		if _, err := w.Commit(tx); err != nil {
			t.Fatalf("Commit: %v", err)
		}
	}
}

// shippedMsg is one message read back from the stream.
type shippedMsg struct {
	seq uint64
	b   wire.Batch
	raw []byte
}

// readBack reads every message of subject from the stream, in order.
func readBack(t testing.TB, nc *nats.Conn, subject string) []shippedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "FERRY")
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := wire.NewDecompressor()
	defer dec.Close()
	var out []shippedMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("GetMsg %d: %v", seq, err)
		}
		if m.Subject != subject {
			continue
		}
		b, err := wire.ParseHeader(m.Header)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		raw, err := dec.Decompress(nil, m.Data, &b)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, shippedMsg{seq: seq, b: b, raw: append([]byte(nil), raw...)})
	}
	return out
}

// checkExact checks that msgs carry every frame of the source's segments in
// dir once, in order, byte-identical, up to end, with PrevEnd on the first
// message of each segment; torn says how many torn bytes each segment ends
// with (not shipped).
func checkExact(t testing.TB, dir, source string, msgs []shippedMsg, end format.Position) {
	t.Helper()
	var pos format.Position
	var part []byte
	seen := map[string]bool{}
	for i, m := range msgs {
		b := m.b
		if seen[b.MsgID()] {
			t.Fatalf("message %d (seq %d): duplicate id %s", i, m.seq, b.MsgID())
		}
		seen[b.MsgID()] = true
		if b.Part == 0 {
			if pos.Segment != b.Segment {
				if b.PrevEnd < 0 {
					t.Fatalf("message %d: first of segment %d without PrevEnd", i, b.Segment)
				}
				if pos.Segment != 0 && (b.Segment != pos.Segment+1 || b.PrevEnd != pos.Offset) {
					t.Fatalf("message %d: segment %d PrevEnd %d, but shipped up to %v", i, b.Segment, b.PrevEnd, pos)
				}
				pos = format.Position{Segment: b.Segment, Offset: b.From}
			} else if b.PrevEnd >= 0 {
				t.Fatalf("message %d: PrevEnd %d in the middle of segment %d", i, b.PrevEnd, b.Segment)
			}
			if b.From != pos.Offset {
				t.Fatalf("message %d: From %d, want %d (segment %d)", i, b.From, pos.Offset, b.Segment)
			}
		}
		data := m.raw
		if b.Parts > 1 {
			part = append(part, m.raw...)
			if b.Part < b.Parts-1 {
				continue
			}
			data, part = part, nil
		}
		if int64(len(data)) != b.To-b.From {
			t.Fatalf("message %d: %d raw bytes for [%d,%d)", i, len(data), b.From, b.To)
		}
		want := readRange(t, dir, source, b.Segment, b.From, b.To)
		if !bytes.Equal(data, want) {
			t.Fatalf("message %d: bytes of segment %d [%d,%d) differ from the file", i, b.Segment, b.From, b.To)
		}
		// Every frame in the range checks out.
		for off := 0; off < len(data); {
			_, n, err := format.ParseFrame(data[off:])
			if err != nil {
				t.Fatalf("message %d: frame at %d: %v", i, b.From+int64(off), err)
			}
			off += n
		}
		pos.Offset = b.To
	}
	if pos != end {
		t.Fatalf("shipped up to %v, want %v", pos, end)
	}
}

func readRange(t testing.TB, dir, source string, seg uint64, from, to int64) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, format.SegmentName(source, seg)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, to-from)
	if _, err := f.ReadAt(b, from); err != nil {
		t.Fatalf("reading segment %d [%d,%d): %v", seg, from, to, err)
	}
	return b
}

// testLogger logs through t.Log, shown with -v or on failure.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
