package shipper_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lossyStream is the real JetStream client with one fault injected: the
// failAt-th asynchronous publish never reaches the server and its future
// fails, while the publishes after it go through, which leaves a hole.
type lossyStream struct {
	*jsclient.Client
	failAt int64
	n      atomic.Int64
}

func (l *lossyStream) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	if l.n.Add(1) == l.failAt {
		return lostFuture{msg}, nil
	}
	return l.Client.PublishAsync(msg)
}

type lostFuture struct{ msg *nats.Msg }

func (f lostFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f lostFuture) Err() <-chan error {
	c := make(chan error, 1)
	time.AfterFunc(100*time.Millisecond, func() { c <- errors.New("injected: message lost in transit (ack timeout)") })
	return c
}
func (f lostFuture) Msg() *nats.Msg { return f.msg }

func TestHoleInStreamIsRepaired(t *testing.T) {
	cases := []struct {
		name   string
		rotate bool  // segment 1 holds 10 transactions, shipped in the first (fenced) message
		failAt int64 // which asynchronous publish is lost
	}{
		{"MidSegment", false, 5},
		{"OpensSegment", true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, nc := startServer(t, 0)
			c := newClient(t, nc)
			dir := t.TempDir()
			w := openWriter(t, dir, "orders")
			if tc.rotate {
				writeTxs(t, w, 0, 10, 1, 200)
				if err := w.Rotate(); err != nil {
					t.Fatal(err)
				}
			}
			writeTxs(t, w, 10, 2000, 1, 200)
			w.Close()
			end := endOf(t, dir, "orders")
			st := &lossyStream{Client: c, failAt: tc.failAt}
			r := startShipper(t, st, dir, "orders", shipper.WithMaxBatchBytes(4<<10))
			r.waitAcked(t, end, 20*time.Second)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if got := r.s.Stats().Repairs; got != 1 {
				t.Fatalf("Stats.Repairs = %d, want 1", got)
			}
			msgs := readBack(t, nc, c.Subject("orders"))
			repaired := 0
			for _, m := range msgs {
				if m.b.Repair > 0 {
					repaired++
				}
			}
			if repaired == 0 {
				t.Fatal("no message re-shipped with a Repair number")
			}
			checkReceiverView(t, dir, "orders", msgs, end)
		})
	}
}

// checkReceiverView applies msgs the way the wire package tells receivers
// to: skip what is already applied, wait at (skip) a range that starts
// beyond the position, apply from the position, join split frames (starting
// over when part 0 comes again). The result must be every byte of the
// files, once.
func checkReceiverView(t *testing.T, dir, source string, msgs []shippedMsg, end format.Position) {
	t.Helper()
	var pos format.Position
	got := map[uint64][]byte{}
	var join []byte
	joining := false
	for _, m := range msgs {
		b := m.b
		if b.Parts > 1 && b.Part > 0 {
			if joining {
				join = append(join, m.raw...)
				if b.Part == b.Parts-1 {
					got[b.Segment] = append(got[b.Segment], join...)
					pos = format.Position{Segment: b.Segment, Offset: b.To}
					joining = false
				}
			}
			continue
		}
		switch {
		case pos.Segment == 0 && b.PrevEnd == 0, b.Segment == pos.Segment+1 && b.PrevEnd == pos.Offset:
			pos = format.Position{Segment: b.Segment, Offset: b.From}
		case b.Segment < pos.Segment || b.Segment == pos.Segment && b.To <= pos.Offset:
			continue // applied already
		case b.Segment != pos.Segment || b.From > pos.Offset:
			continue // beyond the position: a repair follows
		}
		if b.From < pos.Offset {
			t.Fatalf("range [%d,%d) overlaps the position %v without starting there", b.From, b.To, pos)
		}
		if b.Parts > 1 {
			join, joining = append(join[:0], m.raw...), true
			continue
		}
		got[b.Segment] = append(got[b.Segment], m.raw...)
		pos.Offset = b.To
	}
	if pos != end {
		t.Fatalf("receiver view ends at %v, want %v", pos, end)
	}
	for seg := uint64(1); seg <= end.Segment; seg++ {
		fi, err := os.Stat(filepath.Join(dir, format.SegmentName(source, seg)))
		if err != nil {
			t.Fatal(err)
		}
		want := readRange(t, dir, source, seg, int64(format.HeaderLen(format.Version, source)), fi.Size())
		if !bytes.Equal(got[seg], want) {
			t.Fatalf("receiver view of segment %d differs from the file (%d bytes, want %d)", seg, len(got[seg]), len(want))
		}
	}
}

// stallingStream is the real client whose stallAt-th asynchronous publish
// is never sent and never acknowledged: a shipper stopped then has shipped
// part of a split frame.
type stallingStream struct {
	*jsclient.Client
	stallAt int64
	n       atomic.Int64
}

func (s *stallingStream) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	if s.n.Add(1) >= s.stallAt {
		return stalledFuture{msg}, nil
	}
	return s.Client.PublishAsync(msg)
}

type stalledFuture struct{ msg *nats.Msg }

func (f stalledFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f stalledFuture) Err() <-chan error            { return nil }
func (f stalledFuture) Msg() *nats.Msg               { return f.msg }

func TestResumeInsideSplitFrameThatStartsSegment(t *testing.T) {
	_, nc := startServer(t, 0)
	// A short duplicate window, so that the re-sent parts are not dropped
	// as duplicates: the case of a shipper restarted long after.
	c, err := jsclient.New(t.Context(), nc, jsclient.Config{LeaseTTL: 2 * time.Second, Duplicates: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 10, 1, 200)
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	writeTxs(t, w, 10, 1, 16, 200<<10) // a ~3 MB transaction opens segment 2
	writeTxs(t, w, 11, 10, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")

	// Segment 1 goes in the fenced first publish; parts 0 and 1 of the
	// big frame go through; part 2 never leaves.
	r := startShipper(t, &stallingStream{Client: c, stallAt: 3}, dir, "orders", shipper.WithDrainTimeout(200*time.Millisecond), shipper.WithCodec(wire.CodecNone))
	deadline := time.Now().Add(10 * time.Second)
	for len(readBack(t, nc, c.Subject("orders"))) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	msgs := readBack(t, nc, c.Subject("orders"))
	if last := msgs[len(msgs)-1].b; last.Segment != 2 || last.Parts < 3 || last.Part != 1 || last.PrevEnd <= 0 {
		t.Fatalf("stream ends with %+v, want part 1 of the split frame opening segment 2, with PrevEnd", last)
	}
	time.Sleep(400 * time.Millisecond) // past the duplicate window
	r = startShipper(t, c, dir, "orders", shipper.WithCodec(wire.CodecNone))
	r.waitAcked(t, end, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	msgs = readBack(t, nc, c.Subject("orders"))
	checkReceiverView(t, dir, "orders", msgs, end)
	// The frame was re-sent from part 0, with PrevEnd.
	restarts := 0
	for _, m := range msgs {
		if m.b.Segment == 2 && m.b.Parts > 1 && m.b.Part == 0 {
			restarts++
			if m.b.PrevEnd != msgs[0].b.To {
				t.Errorf("part 0 PrevEnd %d, want %d", m.b.PrevEnd, msgs[0].b.To)
			}
		}
	}
	if restarts != 2 {
		t.Errorf("part 0 sent %d times, want 2", restarts)
	}
}

// cutOffStream is lossyStream that, once its lost publish has failed, can no
// longer read the stream's tail: the shipper knows of the hole but cannot
// start the session that repairs it.
type cutOffStream struct {
	lossyStream
}

func (c *cutOffStream) LastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	if c.n.Load() > c.failAt {
		return nil, errors.New("injected: server unreachable")
	}
	return c.Client.LastMsg(ctx, subject)
}

// TestHoleRepairSurvivesRestart: a shipper that found a hole in the stream
// is stopped before it could repair it (a crash would do the same: the hole
// is in its checkpoint by then). The stream's tail is past the hole, so
// only the checkpoint brings the next shipper back to it: it must re-ship
// from the hole, and the stream must then read as every byte of the files.
// If the stream was lost meanwhile, the hole is moot: the next shipper
// ships everything from the files' start, not from the hole.
func TestHoleRepairSurvivesRestart(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprintf("StreamLost=%v", lost), func(t *testing.T) { testHoleRepairSurvivesRestart(t, lost) })
	}
}

func testHoleRepairSurvivesRestart(t *testing.T, streamLost bool) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 2000, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	ckpt := filepath.Join(dir, "orders.ship-checkpoint")
	st := &cutOffStream{lossyStream{Client: c, failAt: 5}}
	r := startShipper(t, st, dir, "orders", shipper.WithMaxBatchBytes(4<<10), shipper.WithCheckpoint(ckpt))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if data, err := os.ReadFile(ckpt); err == nil && bytes.Contains(data, []byte(`"hole_segment"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no hole recorded in the checkpoint")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.stop(t)
	if got := r.s.Stats().Repairs; got != 1 {
		t.Fatalf("Stats.Repairs = %d, want 1", got)
	}
	// The first shipper never got to repair it: the stream has a hole.
	if msgs := readBack(t, nc, c.Subject("orders")); len(msgs) == 0 || lastPos(msgs) != end {
		t.Fatalf("before the restart the stream's tail is %v, want %v (stored past the hole)", lastPos(msgs), end)
	}
	if streamLost {
		js, _ := jetstream.New(nc)
		if err := js.DeleteStream(t.Context(), "FERRY"); err != nil {
			t.Fatal(err)
		}
	}

	r2 := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(4<<10), shipper.WithCheckpoint(ckpt))
	deadline = time.Now().Add(20 * time.Second)
	for {
		msgs := readBackMaybe(t, nc, c.Subject("orders"))
		repaired := 0
		for _, m := range msgs {
			if m.b.Repair > 0 {
				repaired++
			}
		}
		if (repaired > 0 || streamLost) && len(msgs) > 0 && lastPos(msgs) == end {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted shipper did not ship up to the end (%d messages, %d repaired, tail %v)", len(msgs), repaired, lastPos(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	r2.waitAcked(t, end, 20*time.Second)
	if err := r2.stop(t); err != nil {
		t.Fatal(err)
	}
	checkReceiverView(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
	if data, _ := os.ReadFile(ckpt); bytes.Contains(data, []byte(`"hole_segment"`)) {
		t.Fatalf("the checkpoint still records a hole after the repair: %s", data)
	}
}

// racingStream is the real JetStream client with the timing of one race
// forced: when armed, the next asynchronous publish first runs hook (which
// restarts the server on an older image and waits for the client to
// reconnect), then goes through. The shipper checked the epoch before the
// call, so the message reaches the restarted server after the acknowledged
// messages it lost, as it can when a publish crosses a reconnection.
type racingStream struct {
	*jsclient.Client
	hook atomic.Pointer[func()]
}

func (r *racingStream) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	if h := r.hook.Swap(nil); h != nil {
		(*h)()
	}
	return r.Client.PublishAsync(msg)
}

// TestHoleAfterServerLossIsRepaired: a nats-server killed after
// acknowledging messages it had not written loses them (here: restarted on
// a copy of its store taken before they were published), and a message the
// shipper published as the client reconnected is stored after them. The
// stream's tail is then past a hole; resuming from it would leave every
// receiver stopped on a gap for good. The shipper walks back under the
// messages it published across the reconnection, finds the break and
// re-ships from it: read as a receiver reads it, the stream holds every
// byte of the files. Restarted: the shipper is stopped right after that
// publish and a new one started; the checkpoint carries what to check.
func TestHoleAfterServerLossIsRepaired(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("Restarted=%v", restart), func(t *testing.T) { testHoleAfterServerLoss(t, restart) })
	}
}

func testHoleAfterServerLoss(t *testing.T, restart bool) {
	p := startServerProc(t)
	nc := p.connect(t)
	c := newClient(t, nc)
	st := &racingStream{Client: c}
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	defer w.Close()
	writeTxs(t, w, 0, 200, 1, 200)
	w.Sync()
	r := startShipper(t, st, dir, "orders", shipper.WithMaxBatchBytes(4<<10))
	r.waitAcked(t, endOf(t, dir, "orders"), 20*time.Second)

	// The image the server will come back with: what it held then.
	image := t.TempDir()
	time.Sleep(300 * time.Millisecond) // let the server write out what it acknowledged
	copyTree(t, p.store, image)

	writeTxs(t, w, 200, 200, 1, 200)
	w.Sync()
	r.waitAcked(t, endOf(t, dir, "orders"), 20*time.Second) // acknowledged, to be lost

	restarted := make(chan struct{})
	hook := func() {
		defer close(restarted)
		before := c.Epoch()
		p.kill()
		if err := os.RemoveAll(p.store); err != nil {
			t.Error(err)
			return
		}
		copyTree(t, image, p.store)
		p.start(t)
		deadline := time.Now().Add(30 * time.Second)
		for c.Epoch() == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if c.Epoch() == before {
			t.Error("the client did not reconnect")
		}
		if restart {
			go r.s.Stop() // before its next session looks at the stream
		}
	}
	st.hook.Store(&hook)
	writeTxs(t, w, 400, 200, 1, 200)
	w.Close()
	<-restarted
	end := endOf(t, dir, "orders")
	if restart {
		if err := r.waitErr(t, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := r.s.Stats().Repairs; got != 0 {
			t.Fatalf("the first shipper repaired %d holes before it stopped: the restart tests nothing", got)
		}
		r = startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(4<<10))
	}
	r.waitAcked(t, end, 60*time.Second)
	waitStreamEnds(t, nc, c.Subject("orders"), end, 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := r.s.Stats().Repairs; got < 1 {
		t.Errorf("Stats.Repairs = %d, want at least 1", got)
	}
	checkReceiverView(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}

// copyTree copies the directory tree src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}
