package shipper_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// TestCrashImagesShip: the crash images SPEC.md describes ship on: a first
// segment holding only its header (the writer was killed before its first
// frame) and a segment abandoned while its header was written. The first
// message after them carries Prev-End 0 (the chain starts there) or the end
// of the last segment with frames with Ferry-Prev-Segment; both used to
// stop the source (a receiver expecting 0 saw 41; the torn header stopped
// the shipper itself).
func TestCrashImagesShip(t *testing.T) {
	for _, c := range []struct {
		name        string
		write       func(t *testing.T, dir string) (end format.Position, prevEnd int64, prevSeg uint64)
		wantPrevSeg uint64
	}{
		{"HeaderOnlyFirstSegment", func(t *testing.T, dir string) (format.Position, int64, uint64) {
			seg{num: 1}.write(t, dir, "orders")
			_, end := seg{num: 2, txs: 5}.write(t, dir, "orders")
			return format.Position{Segment: 2, Offset: end}, 0, 0
		}, 0},
		{"TornHeaderInTheMiddle", func(t *testing.T, dir string) (format.Position, int64, uint64) {
			_, end1 := seg{num: 1, txs: 5}.write(t, dir, "orders")
			hdr, _ := format.AppendHeader(nil, format.SegmentHeader{Source: "orders", Segment: 2})
			if err := os.WriteFile(filepath.Join(dir, format.SegmentName("orders", 2)), hdr[:len(hdr)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			_, end := seg{num: 3, txs: 5}.write(t, dir, "orders")
			return format.Position{Segment: 3, Offset: end}, end1, 1
		}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, nc := startServer(t, 0)
			cl := newClient(t, nc)
			dir := t.TempDir()
			end, prevEnd, prevSeg := c.write(t, dir)
			r := startShipper(t, cl, dir, "orders")
			r.waitAcked(t, end, 20*time.Second)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			msgs := readBack(t, nc, cl.Subject("orders"))
			var first *shippedMsg
			for i := range msgs {
				if msgs[i].b.Segment == end.Segment && msgs[i].b.PrevEnd >= 0 {
					first = &msgs[i]
					break
				}
			}
			if first == nil || first.b.PrevEnd != prevEnd || first.b.PrevSegment != prevSeg {
				t.Fatalf("first message of segment %d: %+v; want Prev-End %d Prev-Segment %d", end.Segment, first, prevEnd, prevSeg)
			}
		})
	}
}

// TestPartialFrameWaitReported: a crashed writer's partial last frame in
// the newest segment, with no writer restarting, is waited at (nothing may
// be skipped) but not silently: Stats and the health text name it after a
// few polls, and it clears when a new writer moves the source on.
func TestPartialFrameWaitReported(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	whole, _ := format.AppendTx(nil, tx(7))
	_, end := seg{num: 1, txs: 5, tail: whole[:20]}.write(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, format.Position{Segment: 1, Offset: end}, 10*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for r.s.Stats().PartialBytes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a wait at a partial frame was never reported")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := r.s.Stats(); st.PartialBytes != 20 || st.Partial != (format.Position{Segment: 1, Offset: end}) {
		t.Fatalf("Stats: partial %v, %d bytes; want 1:%d, 20", st.Partial, st.PartialBytes, end)
	}
	// A writer starts again: segment 2; the source moves on.
	_, end2 := seg{num: 2, txs: 3}.write(t, dir, "orders")
	r.waitAcked(t, format.Position{Segment: 2, Offset: end2}, 10*time.Second)
	for r.s.Stats().PartialBytes != 0 {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("the partial frame report did not clear")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}
