package shipper_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
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
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 2000, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	st := &lossyStream{Client: c, failAt: 5}
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
}

// checkReceiverView applies msgs the way the wire package tells receivers
// to: skip what is already applied, wait at (skip) a range that starts
// beyond the position, apply from the position. The result must be every
// byte of the files, once.
func checkReceiverView(t *testing.T, dir, source string, msgs []shippedMsg, end format.Position) {
	t.Helper()
	var pos format.Position
	var got []byte
	for _, m := range msgs {
		b := m.b
		if b.Parts > 1 {
			t.Fatal("split frames not handled by this checker")
		}
		switch {
		case pos.Segment == 0 || b.Segment == pos.Segment+1 && b.PrevEnd == pos.Offset:
			pos = format.Position{Segment: b.Segment, Offset: b.From}
		case b.Segment < pos.Segment || b.Segment == pos.Segment && b.To <= pos.Offset:
			continue // applied already
		case b.Segment != pos.Segment || b.From > pos.Offset:
			continue // beyond the position: a repair follows
		}
		if b.From < pos.Offset {
			t.Fatalf("range [%d,%d) overlaps the position %v without starting there", b.From, b.To, pos)
		}
		got = append(got, m.raw...)
		pos.Offset = b.To
	}
	if pos != end {
		t.Fatalf("receiver view ends at %v, want %v", pos, end)
	}
	want := readRange(t, dir, source, end.Segment, int64(format.MinHeaderLen+len(source)), end.Offset)
	if !bytes.Equal(got, want) {
		t.Fatal("receiver view differs from the file")
	}
}
