package consume_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/receiver/store"
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

// peakHeap samples the live heap (as of the last collection) while f runs
// and returns the highest value seen above the value before.
func peakHeap(f func()) int64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() int64 { metrics.Read(sample); return int64(sample[0].Value.Uint64()) }
	base := read()
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := read(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	f()
	close(stop)
	<-done
	if v := read(); v > peak.Load() {
		peak.Store(v)
	}
	return peak.Load() - base
}

// tinyTxs returns the raw frames of transactions of per tiny changes
// (~11 bytes each) adding up to about rawBytes, and their changes.
func tinyTxs(t *testing.T, rawBytes, per int) (raw []byte, frames, changes int) {
	t.Helper()
	tx := format.Tx{CommitTime: 1_700_000_000_000_000_000}
	for len(raw) < rawBytes {
		tx.Changes = tx.Changes[:0]
		for j := 0; j < per; j++ {
			tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpUpsert,
				Key: binary.BigEndian.AppendUint32(nil, uint32(changes+j)), After: []byte("1")})
		}
		var err error
		if raw, err = format.AppendTx(raw, &tx); err != nil {
			t.Fatal(err)
		}
		frames++
		changes += per
	}
	return raw, frames, changes
}

func newDiskHarness(t *testing.T) *harness {
	t.Helper()
	// Small memtables: Pebble's (Go-allocated, configured) memtable arenas
	// would otherwise dominate the heap measured here.
	st, err := store.Open(t.TempDir(), store.WithMemTableSize(2<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dec, err := wire.NewDecompressor()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	m, err := consume.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := consume.NewApplier(st, dec, m, nil, "ferry")
	t.Cleanup(ap.Close)
	return &harness{t: t, st: st, ap: ap, pub: &wiretest.Publisher{Prefix: "ferry", Codec: wire.CodecZstd}, m: m}
}

// A message of many tiny changes costs the receiver a bounded working set
// to decode and apply, not a multiple of its raw size; a single
// transaction too costly to hold stops its source with a limit error.
func TestTinyChangesDecodeBounded(t *testing.T) {
	const rawBytes = 16 << 20
	t.Run("ManyTransactions", func(t *testing.T) {
		h := newDiskHarness(t)
		raw, frames, changes := tinyTxs(t, rawBytes, 1000)
		m := h.msg(wiretest.Msg{Raw: raw, Batch: wire.Batch{Source: "x", Segment: 1, From: 40, To: 40 + int64(len(raw)),
			Frames: frames, Changes: changes, RawLen: len(raw), Parts: 1, PrevEnd: 0}})
		t.Logf("message: %d KB compressed, %d MiB raw, %d transactions, %d changes", len(m.Body)>>10, len(raw)>>20, frames, changes)
		peak := peakHeap(func() {
			if err := h.ap.Handle(m); err != nil {
				t.Fatal(err)
			}
			if err := h.ap.Commit(); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("heap peak %.0f MiB above the start (%.1fx the raw size)", float64(peak)/(1<<20), float64(peak)/float64(len(raw)))
		if e := h.sourceErr("x"); e != nil {
			t.Fatalf("source stopped: %v", e)
		}
		if p := h.st.Position("x"); p.Offset != 40+int64(len(raw)) {
			t.Fatalf("applied up to %d, want %d", p.Offset, 40+len(raw))
		}
		if _, last := h.st.ChangeRange(); last != uint64(changes) {
			t.Fatalf("last change id %d, want %d", last, changes)
		}
		for _, k := range []int{0, changes / 2, changes - 1} {
			if row, ok, err := h.st.Get("t", binary.BigEndian.AppendUint32(nil, uint32(k))); err != nil || !ok || string(row.Value) != "1" {
				t.Fatalf("row %d: %v %v %q", k, ok, err, row.Value)
			}
		}
		// Decoded whole it held ~334 MiB; in chunks ~57 MiB.
		if peak > 96<<20 {
			t.Fatalf("heap peak %d bytes for a message of %d raw bytes", peak, len(raw))
		}
	})
	t.Run("OneHugeTransaction", func(t *testing.T) {
		h := newDiskHarness(t)
		raw, frames, changes := tinyTxs(t, rawBytes, rawBytes/11)
		m := h.msg(wiretest.Msg{Raw: raw, Batch: wire.Batch{Source: "x", Segment: 1, From: 40, To: 40 + int64(len(raw)),
			Frames: frames, Changes: changes, RawLen: len(raw), Parts: 1, PrevEnd: 0}})
		peak := peakHeap(func() {
			if err := h.ap.Handle(m); err != nil {
				t.Fatal(err)
			}
			if err := h.ap.Commit(); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("one transaction of %d changes (%d MiB): heap peak %.0f MiB above the start", changes, len(raw)>>20, float64(peak)/(1<<20))
		if e := h.sourceErr("x"); e == nil || e.Kind != consume.KindLimit {
			t.Fatalf("source error %v, want a limit error", e)
		}
		if peak > 4*rawBytes {
			t.Fatalf("heap peak %d bytes for a message of %d raw bytes", peak, len(raw))
		}
	})
}
