package tail_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/shipper/tail"
)

// TestFollowsPreallocatingWriter follows a real writer whose segments are
// preallocated (SyncAlways): frames appear in place, the file's size does
// not grow, and each segment is cut back to its seal at rotation and Close.
// Every transaction is shipped once, in order, with nothing torn.
func TestFollowsPreallocatingWriter(t *testing.T) {
	dir := t.TempDir()
	const max = 16 << 10
	w, err := format.OpenWriter(dir, "s", format.WithSync(format.SyncAlways, 0), format.WithMaxSegmentSize(max))
	if err != nil {
		t.Fatal(err)
	}
	fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{MaxBytes: 8 << 10, ListEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	var shipped []string
	take := func() {
		for _, s := range drain(t, fl) {
			if s.Torn != 0 {
				t.Fatalf("span %+v: torn bytes in a preallocated chain", s)
			}
			for b := s.Raw; len(b) > 0; {
				f, n, err := format.ParseFrame(b)
				if err != nil {
					t.Fatalf("span of segment %d: %v", s.Segment, err)
				}
				if f.Type == format.FrameTx {
					var tx format.Tx
					if err := format.DecodeTx(f.Payload, &tx); err != nil {
						t.Fatal(err)
					}
					shipped = append(shipped, tx.ID)
				}
				b = b[n:]
			}
		}
	}
	var want []string
	sawPrealloc := false
	for i := 0; i < 1200; i++ {
		tx := &format.Tx{ID: "tx" + itoa(i), CommitTime: int64(i + 1), Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte(itoa(i)), After: []byte(`{"a":1}`)}}}
		if _, err := w.Commit(tx); err != nil {
			t.Fatal(err)
		}
		want = append(want, tx.ID)
		if i%37 == 0 {
			if st, err := os.Stat(filepath.Join(dir, format.SegmentName("s", w.Segment()))); err == nil && st.Size() == max {
				sawPrealloc = true
			}
			take()
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	take()
	if !sawPrealloc {
		t.Fatal("no segment was preallocated: the test follows appends only")
	}
	if w.Segment() < 3 {
		t.Fatalf("%d segments, want rotations", w.Segment())
	}
	if len(shipped) != len(want) {
		t.Fatalf("shipped %d transactions, want %d", len(shipped), len(want))
	}
	for i := range want {
		if shipped[i] != want[i] {
			t.Fatalf("transaction %d shipped as %s, want %s", i, shipped[i], want[i])
		}
	}
}

func itoa(i int) string {
	return string(rune('a'+i/26/26%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
}

// TestPreallocatedSegments: segments as a preallocating writer leaves them —
// live, crashed, damaged.
func TestPreallocatedSegments(t *testing.T) {
	const space = 1 << 20
	withZeros := func(b []byte) []byte { return append(b, make([]byte, space-len(b))...) }
	frame := func(t *testing.T, k int) []byte {
		b, err := format.AppendTx(nil, &format.Tx{CommitTime: int64(2000 + k), Changes: []format.Change{{Table: "t", Op: format.OpInsert, Key: []byte("x" + itoa(k)), After: []byte(`{"a":2}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("ZerosBecomeFrames", func(t *testing.T) {
		dir := t.TempDir()
		b := segmentBytes(t, 1, 2, false, 0)
		path := writeSeg(t, dir, 1, withZeros(b))
		fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{ListEvery: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Close()
		if spans, err := fillUntil(t, fl, 3); err != nil || len(spans) != 1 || spans[0].Frames != 2 {
			t.Fatalf("spans %+v, %v; want the 2 frames, then a wait", spans, err)
		}
		// The writer writes a frame in place, then cuts its space and
		// seals the segment, and creates segment 2.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		end := int64(len(b))
		fr := frame(t, 1)
		if _, err := f.WriteAt(fr, end); err != nil {
			t.Fatal(err)
		}
		end += int64(len(fr))
		if spans, err := fillUntil(t, fl, 3); err != nil || len(spans) != 1 || spans[0].Frames != 1 || spans[0].To != end {
			t.Fatalf("spans %+v, %v; want the frame written in place", spans, err)
		}
		if err := f.Truncate(end); err != nil {
			t.Fatal(err)
		}
		seal := format.AppendSeal(nil, format.Seal{Next: 2, Transactions: 3, Changes: 3, Time: 5000})
		if _, err := f.WriteAt(seal, end); err != nil {
			t.Fatal(err)
		}
		writeSeg(t, dir, 2, withZeros(segmentBytes(t, 2, 1, false, 0)))
		spans, err := fillUntil(t, fl, 3)
		if err != nil {
			t.Fatalf("after the cut and seal: %v (a cut of unwritten space is no shrink)", err)
		}
		if len(spans) != 2 || !spans[0].Sealed || spans[1].Segment != 2 || spans[1].PrevEnd != end+int64(len(seal)) || spans[1].Torn != 0 {
			t.Fatalf("spans %+v; want the seal, then segment 2 after it", spans)
		}
	})

	for _, c := range []struct {
		name     string
		seg1     func(t *testing.T) []byte
		wantTorn int64
	}{
		// A crashed writer's segment: its frames, then its space.
		{"Abandoned", func(t *testing.T) []byte { return withZeros(segmentBytes(t, 1, 3, false, 0)) }, 0},
		// Its last frame half written, then its space: only the frame's
		// bytes are torn (up to its last byte that is not zero; trailing
		// zeros of a torn frame look like unwritten space).
		{"TornThenZeros", func(t *testing.T) []byte {
			fr := frame(t, 9)
			if fr[25] == 0 {
				t.Fatal("pick a cut after a byte that is not zero")
			}
			return withZeros(append(segmentBytes(t, 1, 3, false, 0), fr[:26]...))
		}, 26},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSeg(t, dir, 1, c.seg1(t))
			writeSeg(t, dir, 2, withZeros(segmentBytes(t, 2, 2, false, 0)))
			fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{ListEvery: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			spans, err := fillUntil(t, fl, 3)
			if err != nil {
				t.Fatal(err)
			}
			last := spans[len(spans)-1]
			if len(spans) != 2 || spans[0].Frames != 3 || last.Segment != 2 || last.Torn != c.wantTorn {
				t.Fatalf("spans %+v; want segment 1's 3 frames, then segment 2 with %d torn bytes", spans, c.wantTorn)
			}
		})
	}

	// Zeros, then a valid frame, in the open segment: no writer leaves
	// that (it writes at the end of its frames), so it is damage, reported
	// at once rather than waited on.
	t.Run("HoleInLiveSegment", func(t *testing.T) {
		dir := t.TempDir()
		b := segmentBytes(t, 1, 2, false, 0)
		hole := int64(len(b))
		b = append(b, make([]byte, 4096)...)
		b = append(b, frame(t, 1)...)
		writeSeg(t, dir, 1, withZeros(b))
		fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{ListEvery: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Close()
		_, err = fillUntil(t, fl, 3)
		var pe *format.PositionError
		if !errors.Is(err, format.ErrCorrupt) && !errors.Is(err, format.ErrChecksum) || !errors.As(err, &pe) || pe.Offset != hole {
			t.Fatalf("Fill: %v; want corruption at offset %d", err, hole)
		}
	})
}
