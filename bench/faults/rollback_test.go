package faults_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/faults"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// waitShipped waits until the stream's last message of source ends where
// the change files do.
func waitShipped(t *testing.T, r *rig, source string, limit time.Duration) {
	t.Helper()
	truth, err := check.FromDir(r.changes)
	must(t, err)
	want := truth.Sources[source].End
	nc, js := r.js()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var got format.Position
	for {
		if s, err := js.Stream(ctx, streamName); err == nil {
			if m, err := s.GetLastMsgForSubject(ctx, "ferry."+source); err == nil {
				if b, err := wire.ParseHeader(m.Header); err == nil {
					got = format.Position{Segment: b.Segment, Offset: b.To}
					if got == want {
						return
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not shipped to %v after %v (stream's last message ends at %v)", source, want, limit, got)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// copyDir copies a directory tree (cp -a).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", from, to, err, out)
	}
}

// TestFaultBrokerRollback: the nats-server's store is restored from an
// older image (the acknowledged tail lost, as a power loss before its sync
// interval would), the shipper re-ships from the stream's real tail, and the
// stream then grows past the cursor a stopped receiver stored: the same
// sequence numbers now hold other messages. The receiver must recognise
// that the stream is not the one it read (the message at its cursor is
// another) and rescan it by position, not resume after its cursor and stop
// on a gap for good.
func TestFaultBrokerRollback(t *testing.T) {
	r := newRig(t, 1)
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := size(5_000, 50_000)
	fig := &figures{scenario: "broker rollback", faults: map[string]int{}}
	write := func(seed uint64, changes, rate int) {
		st := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: changes, Rate: rate, Seed: seed})()
		fig.written += st.Changes
	}
	// Phase 1, then an image of the server's store.
	write(21, n, size(5_000, 10_000))
	waitShipped(t, r, "shop", time.Minute)
	imageSeq := lastSeq(t, r)
	ns := r.nats[0]
	image := filepath.Join(r.root, "nats-image")
	must(t, ns.Stop(10*time.Second))
	copyDir(t, filepath.Join(ns.Dir, "js"), image)
	must(t, ns.Start(ctx))
	// Phase 2, written slowly (a message or so per transaction), applied
	// by the receiver, which then stops with its cursor past the image's
	// tail.
	// Ten writer runs, each shipped before the next: at least ten
	// messages however slow the machine (one slow run could be shipped
	// in a single message, and the re-ship could not take fewer).
	for i := range uint64(10) {
		write(100+i, size(100, 400), 500)
		waitShipped(t, r, "shop", time.Minute)
	}
	truth, err := check.FromDir(r.changes)
	must(t, err)
	waitCaughtUp(t, rc, truth, time.Minute)
	must(t, rc.Stop(10*time.Second))
	cursor := lastSeq(t, r)
	// The store rolls back to the image; the shipper re-ships phase 2 from
	// the stream's real tail (bigger messages: fewer sequence numbers) and
	// ships phase 3, so the stream grows past the receiver's cursor.
	must(t, ns.Stop(10*time.Second))
	must(t, os.RemoveAll(filepath.Join(ns.Dir, "js")))
	copyDir(t, image, filepath.Join(ns.Dir, "js"))
	fig.faults["store rolled back"]++
	must(t, ns.Start(ctx))
	waitShipped(t, r, "shop", 2*time.Minute)
	reshipped := lastSeq(t, r)
	for seed := uint64(23); ; seed++ {
		write(seed, n, size(5_000, 10_000))
		waitShipped(t, r, "shop", 2*time.Minute)
		if last := lastSeq(t, r); last > cursor+20 {
			t.Logf("image's tail at sequence %d; the receiver stopped at %d; phase 2 re-shipped up to %d; after %d more writer runs the stream ends at %d",
				imageSeq, cursor, reshipped, seed-22, last)
			if reshipped >= cursor {
				t.Fatalf("the re-ship took as many sequence numbers as the original: the scenario does not reuse them")
			}
			break
		}
	}

	must(t, rc.Start())
	truth, err = check.FromDir(r.changes)
	must(t, err)
	fig.catchUp = waitCaughtUp(t, rc, truth, 2*time.Minute)
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	noCrash(t, rc.Process, true)
	noCrash(t, sh, false)
}

// lastSeq returns the stream's last sequence.
func lastSeq(t *testing.T, r *rig) uint64 {
	t.Helper()
	nc, js := r.js()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	must(t, err)
	info, err := s.Info(ctx)
	must(t, err)
	return info.State.LastSeq
}
