package shipper_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
)

func openWriter(t testing.TB, dir, source string, opts ...format.WriterOption) *format.Writer {
	t.Helper()
	opts = append([]format.WriterOption{format.WithSync(format.SyncNone, 0), format.WithHeartbeat(0)}, opts...)
	w, err := format.OpenWriter(dir, source, opts...)
	if err != nil {
		t.Fatalf("OpenWriter: %v", err)
	}
	return w
}

func TestShipNormal(t *testing.T) {
	for _, codec := range []wire.Codec{wire.CodecZstd, wire.CodecS2, wire.CodecNone} {
		t.Run(codec.String(), func(t *testing.T) {
			_, nc := startServer(t, 0)
			c := newClient(t, nc)
			dir := t.TempDir()
			w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(200<<10), format.WithHeartbeat(20*time.Millisecond))
			r := startShipper(t, c, dir, "orders", shipper.WithCodec(codec), shipper.WithMaxBatchBytes(64<<10))
			// Write while the shipper runs: it must follow rotations live.
			changes := 0
			for i := 0; i < 20; i++ {
				writeTxs(t, w, i*100, 100, 1+i%3, 200)
				changes += 100 * (1 + i%3)
				if err := w.Sync(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			end := endOf(t, dir, "orders")
			if end.Segment < 3 {
				t.Fatalf("only %d segments: the test wants rotations", end.Segment)
			}
			r.waitAcked(t, end, 20*time.Second)
			if err := r.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			msgs := readBack(t, nc, c.Subject("orders"))
			checkExact(t, dir, "orders", msgs, end)
			st := r.s.Stats()
			if got, want := st.Changes, uint64(changes); got != want {
				t.Errorf("Stats.Changes = %d, want %d", got, want)
			}
			if st.Batches != uint64(len(msgs)) {
				t.Errorf("Stats.Batches = %d, want %d messages", st.Batches, len(msgs))
			}
		})
	}
}

func TestRestartResumesExactly(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(100<<10))
	writeTxs(t, w, 0, 1000, 1, 200)
	w.Sync()
	mid := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(16<<10))
	r.waitAcked(t, mid, 20*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The writer goes on while no shipper runs; a new one picks up
	// exactly where the stream ends.
	writeTxs(t, w, 1000, 1000, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r2 := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(16<<10))
	r2.waitAcked(t, end, 20*time.Second)
	if err := r2.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}

func TestSecondShipperRefused(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 100, 1, 200)
	w.Sync()
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, endOf(t, dir, "orders"), 10*time.Second)

	// Another process, another connection: refused, not interleaved.
	_, err := runOnce(t, newClient(t, nc), dir, "orders")
	if !errors.Is(err, shipper.ErrSourceBusy) {
		t.Fatalf("second shipper: Run = %v, want ErrSourceBusy", err)
	}
	// The first one keeps shipping.
	writeTxs(t, w, 100, 100, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r.waitAcked(t, end, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("first shipper: %v", err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}

// runOnce runs a shipper that is expected to fail and returns its error.
func runOnce(t *testing.T, st shipper.Stream, dir, source string, opts ...shipper.Option) (*shipper.Shipper, error) {
	t.Helper()
	s, err := shipper.New(st, dir, source, append([]shipper.Option{shipper.WithPollInterval(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Run did not fail within 10s")
	}
	return s, err
}

func TestRespectsServerMaxPayload(t *testing.T) {
	_, nc := startServer(t, 64<<10) // a server with a small max_payload
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 500, 2, 200)
	writeTxs(t, w, 500, 1, 1500, 200) // one ~300 KB transaction: parts
	writeTxs(t, w, 501, 500, 2, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders", shipper.WithCodec(wire.CodecNone))
	r.waitAcked(t, end, 20*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	msgs := readBack(t, nc, c.Subject("orders"))
	split := false
	for _, m := range msgs {
		if len(m.raw) > 64<<10 {
			t.Errorf("message %s of %d bytes over max_payload", m.b.MsgID(), len(m.raw))
		}
		split = split || m.b.Parts > 1
	}
	if !split {
		t.Error("the 300 KB transaction was not split into parts")
	}
	checkExact(t, dir, "orders", msgs, end)
}

// A shipper killed with -9 leaves its lease behind: a restart is refused
// until the lease's TTL runs out, then ships from where the stream ends.
func TestCrashedShippersLeaseExpires(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc) // lease TTL 2 s
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 100, 1, 200)
	w.Close()
	if _, err := c.AcquireLease(t.Context(), c.Subject("orders"), "crashed-host:123:dead"); err != nil {
		t.Fatal(err)
	}
	_, err := runOnce(t, c, dir, "orders")
	if !errors.Is(err, shipper.ErrSourceBusy) || !strings.Contains(err.Error(), "crashed-host:123:dead") {
		t.Fatalf("restart while the lease lives: %v, want ErrSourceBusy naming the holder", err)
	}
	time.Sleep(c.LeaseTTL() + 500*time.Millisecond)
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, end, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}
