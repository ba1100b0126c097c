package shipper_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStreamLostWhileRunning makes the stream vanish under a running shipper
// (deleted through the API, or the server's whole store wiped, lease bucket
// included) while the legacy keeps writing: the shipper re-creates the
// stream and re-ships everything from the change files, every frame once
// and in order, without a restart (README.md, guarantee 6: "A broker's ack is not durability").
func TestStreamLostWhileRunning(t *testing.T) {
	cases := []struct {
		name string
		wipe bool // kill the server, remove its store and restart it; else delete the stream
	}{
		{"StreamDeleted", false},
		{"StoreWiped", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startServerProc(t)
			nc := p.connect(t)
			c := newClient(t, nc)
			dir := t.TempDir()
			w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(32<<10))
			writeTxs(t, w, 0, 300, 1, 200)
			w.Sync()
			r := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(8<<10))
			r.waitAcked(t, endOf(t, dir, "orders"), 10*time.Second)

			if tc.wipe {
				p.kill()
				if err := os.RemoveAll(filepath.Join(p.store, "jetstream")); err != nil {
					t.Fatal(err)
				}
				p.start(t)
			} else {
				js, _ := jetstream.New(nc)
				if err := js.DeleteStream(t.Context(), "FERRY"); err != nil {
					t.Fatal(err)
				}
			}
			writeTxs(t, w, 300, 300, 1, 200)
			w.Close()
			end := endOf(t, dir, "orders")
			r.waitAcked(t, end, 20*time.Second)
			// Acked catches up only once the re-shipped tail is stored.
			waitStreamEnds(t, nc, c.Subject("orders"), end, 20*time.Second)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if got := r.s.Stats().Behind; got < 1 {
				t.Errorf("Stats.Behind = %d, want >= 1 (the stream lost what was acknowledged)", got)
			}
			checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
		})
	}
}

// TestStreamLostAfterRetentionStopsOnGap: when the stream vanishes after
// retention deleted segments it had acknowledged, the shipper cannot
// re-ship them: it stops with an error naming the missing segments instead
// of silently shipping from the oldest one left.
func TestStreamLostAfterRetentionStopsOnGap(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(8<<10))
	writeTxs(t, w, 0, 300, 1, 200)
	w.Sync()
	r := startShipper(t, c, dir, "orders", shipper.WithRetention(shipper.RetainDelete, time.Second, ""))
	r.waitAcked(t, endOf(t, dir, "orders"), 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if segs, _ := format.ListSegments(dir, "orders"); len(segs) > 0 && segs[0].Segment > 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retention deleted nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(t.Context(), "FERRY"); err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 300, 10, 1, 200)
	w.Close()
	err := r.waitErr(t, 20*time.Second)
	if !errors.Is(err, shipper.ErrGap) || !strings.Contains(err.Error(), "segments 1-") {
		t.Fatalf("Run = %v, want ErrGap naming the missing segments", err)
	}
}

// readBackMaybe is readBack that returns nil while the stream does not
// exist (yet).
func readBackMaybe(t testing.TB, nc *nats.Conn, subject string) []shippedMsg {
	t.Helper()
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(t.Context(), "FERRY"); err != nil {
		return nil
	}
	return readBack(t, nc, subject)
}

// waitStreamEnds waits (up to d) until the last message on subject ends at
// end.
func waitStreamEnds(t testing.TB, nc *nats.Conn, subject string, end format.Position, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if msgs := readBackMaybe(t, nc, subject); len(msgs) > 0 && lastPos(msgs) == end {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lastPos returns where the last whole message of msgs ends.
func lastPos(msgs []shippedMsg) format.Position {
	b := msgs[len(msgs)-1].b
	return format.Position{Segment: b.Segment, Offset: b.To}
}

// slowRecreate is the real client whose Recreate takes a while, long enough
// for segments acknowledged before the loss to pass retention's minimum age.
type slowRecreate struct {
	*jsclient.Client
	delay time.Duration
}

func (s *slowRecreate) Recreate(ctx context.Context) error {
	time.Sleep(s.delay)
	return s.Client.Recreate(ctx)
}

// TestStreamLostRetentionWaitsForReship: once the shipper finds the stream
// lost, the segments it must re-ship are no longer acknowledged: retention
// does not remove them under the re-shipping, even when their first
// acknowledgement is older than the minimum age.
func TestStreamLostRetentionWaitsForReship(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(8<<10))
	writeTxs(t, w, 0, 100, 1, 200)
	w.Sync()
	r := startShipper(t, &slowRecreate{Client: c, delay: 1500 * time.Millisecond}, dir, "orders",
		shipper.WithRetention(shipper.RetainDelete, time.Second, ""))
	r.waitAcked(t, endOf(t, dir, "orders"), 10*time.Second)
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(t.Context(), "FERRY"); err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 100, 10, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	deadline := time.Now().Add(20 * time.Second)
	var msgs []shippedMsg
	for time.Now().Before(deadline) {
		if msgs = readBackMaybe(t, nc, c.Subject("orders")); len(msgs) > 0 && lastPos(msgs) == end {
			break
		}
		select {
		case err := <-r.errc:
			t.Fatalf("Run returned %v while re-shipping", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 || msgs[0].b.Segment != 1 || lastPos(msgs) != end {
		t.Fatalf("re-shipped %d messages, want segment 1 up to %v", len(msgs), end)
	}
}

// TestStreamBehindIntoRemovedSegmentStopsOnGap: the stream lost its tail
// back into a segment that retention already removed: the shipper stops
// with ErrGap naming that segment.
func TestStreamBehindIntoRemovedSegmentStopsOnGap(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(8<<10))
	writeTxs(t, w, 0, 300, 1, 200)
	w.Close()
	r := startShipper(t, c, dir, "orders", shipper.WithRetention(shipper.RetainDelete, time.Second, ""), shipper.WithMaxBatchBytes(2<<10))
	r.waitAcked(t, endOf(t, dir, "orders"), 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if segs, _ := format.ListSegments(dir, "orders"); len(segs) > 0 && segs[0].Segment > 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retention deleted nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	// The broker loses everything after segment 1's first message.
	js, _ := jetstream.New(nc)
	st, err := js.Stream(t.Context(), "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	msgs := readBack(t, nc, c.Subject("orders"))
	for _, m := range msgs[1:] {
		if err := st.DeleteMsg(t.Context(), m.seq); err != nil {
			t.Fatal(err)
		}
	}
	r = startShipper(t, c, dir, "orders", shipper.WithRetention(shipper.RetainDelete, time.Second, ""))
	err = r.waitErr(t, 10*time.Second)
	if !errors.Is(err, shipper.ErrGap) || !strings.Contains(err.Error(), "segment 1 ") {
		t.Fatalf("Run = %v, want ErrGap naming segment 1", err)
	}
}

// TestStreamLostWhileIdle: the stream vanishes while the legacy writes
// nothing, so no publish notices it: the shipper's idle check does, and the
// stream comes back with every frame of the files, once and in order,
// before the legacy writes again.
func TestStreamLostWhileIdle(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(32<<10))
	writeTxs(t, w, 0, 200, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(8<<10), shipper.WithStreamCheckInterval(200*time.Millisecond))
	r.waitAcked(t, end, 10*time.Second)
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(t.Context(), "FERRY"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var msgs []shippedMsg
	for {
		if msgs = readBackMaybe(t, nc, c.Subject("orders")); len(msgs) > 0 && lastPos(msgs) == end {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the stream was deleted under an idle shipper it holds %d messages: not re-shipped", len(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}
