package consume_test

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

// liveHeap returns the bytes of live heap after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// forgedPart is part i of parts of a split frame of source at segment 1
// spanning span bytes, its raw body size zeros (a few KB compressed).
func forgedPart(source string, span int64, i, parts int, raw []byte) wiretest.Msg {
	return wiretest.Msg{Raw: raw, Batch: wire.Batch{Source: source, Segment: 1, From: 40, To: 40 + span, Frames: 1, Changes: 1,
		RawLen: len(raw), Part: i, Parts: parts, PrevEnd: 0}}
}

// Forged parts of split frames cannot make the receiver hold more than its
// transaction limit allows, whatever span they declare and however many
// sources they name.
func TestForgedSplitFramesBounded(t *testing.T) {
	const maxTx = 16 << 20
	raw := make([]byte, 4<<20)
	t.Run("HugeSpan", func(t *testing.T) {
		h := newHarness(t)
		h.ap.SetMaxTxBytes(maxTx)
		before := liveHeap()
		for i := range 20 { // 80 MiB of parts of a frame declaring 4 GiB
			if err := h.ap.Handle(h.msg(forgedPart("x", 4<<30, i, 1000, raw))); err != nil {
				t.Fatal(err)
			}
		}
		grew := liveHeap() - before
		t.Logf("live heap grew by %.1f MiB after 20 forged parts of 4 MiB declaring a 4 GiB frame", float64(grew)/(1<<20))
		if e := h.sourceErr("x"); e == nil || e.Kind != consume.KindLimit || !errors.Is(e, consume.ErrLimit) {
			t.Fatalf("source error %v, want a limit error", e)
		}
		if grew > maxTx {
			t.Fatalf("live heap grew by %d bytes", grew)
		}
	})
	t.Run("ManySources", func(t *testing.T) {
		h := newHarness(t)
		h.ap.SetMaxTxBytes(maxTx)
		before := liveHeap()
		limited := 0
		for s := range 12 { // each source holds 8 MiB of a 12 MiB frame: 96 MiB unbounded
			src := fmt.Sprintf("s%d", s)
			for i := range 2 {
				if err := h.ap.Handle(h.msg(forgedPart(src, 12<<20, i, 3, raw))); err != nil {
					t.Fatal(err)
				}
			}
			if e := h.sourceErr(src); e != nil && e.Kind == consume.KindLimit {
				limited++
			}
		}
		grew := liveHeap() - before
		t.Logf("live heap grew by %.1f MiB with 12 sources joining 12 MiB frames (limit %d MiB, join budget %d MiB); %d sources stopped on the limit",
			float64(grew)/(1<<20), maxTx>>20, 2*maxTx>>20, limited)
		if grew > 2*maxTx+8<<20 {
			t.Fatalf("live heap grew by %d bytes, over the join budget %d", grew, 2*maxTx)
		}
		if limited == 0 {
			t.Fatal("no source stopped on the join budget")
		}
	})
}
