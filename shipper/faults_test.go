package shipper_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/tail"
	"github.com/nats-io/nats.go/jetstream"
)

// seg builds a segment file by hand, frame by frame, for the cases a
// well-behaved writer does not produce.
type seg struct {
	num    uint64
	txs    int
	seal   bool
	tail   []byte                       // bytes appended after the frames
	mangle func(b []byte, offs []int64) // corrupts the file's bytes
	header uint64                       // segment number written in the header, if not num
}

func tx(i int) *format.Tx {
	return &format.Tx{CommitTime: time.Now().UnixNano(), ID: fmt.Sprint("t", i), Changes: []format.Change{{
		Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)),
		After: []byte(fmt.Sprintf(`{"id":%d,"note":%q}`, i, strings.Repeat("n", 150))),
	}}}
}

// write writes s into dir and returns the frame offsets and the offset just
// past the last whole frame.
func (s seg) write(t *testing.T, dir, source string) ([]int64, int64) {
	t.Helper()
	hn := s.header
	if hn == 0 {
		hn = s.num
	}
	b, err := format.AppendHeader(nil, format.SegmentHeader{Source: source, Segment: hn, Created: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for i := 0; i < s.txs; i++ {
		offs = append(offs, int64(len(b)))
		if b, err = format.AppendTx(b, tx(i)); err != nil {
			t.Fatal(err)
		}
	}
	if s.seal {
		offs = append(offs, int64(len(b)))
		b = format.AppendSeal(b, format.Seal{Next: s.num + 1, Transactions: uint64(s.txs), Changes: uint64(s.txs), Time: time.Now().UnixNano()})
	}
	end := int64(len(b))
	b = append(b, s.tail...)
	if s.mangle != nil {
		s.mangle(b, offs)
	}
	if err := os.WriteFile(filepath.Join(dir, format.SegmentName(source, s.num)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return offs, end
}

func TestTornTailOfCrashedWriter(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	// A whole frame, cut in the middle: the crashed writer's last write.
	partial, _ := format.AppendTx(nil, tx(99))
	partial = partial[:len(partial)/2]
	_, end1 := seg{num: 1, txs: 50, tail: partial}.write(t, dir, "orders")
	_, end2 := seg{num: 2, txs: 10}.write(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, format.Position{Segment: 2, Offset: end2}, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	msgs := readBack(t, nc, c.Subject("orders"))
	checkExact(t, dir, "orders", msgs, format.Position{Segment: 2, Offset: end2})
	for _, m := range msgs {
		if m.b.Segment == 2 && m.b.PrevEnd >= 0 {
			if m.b.PrevEnd != end1 || m.b.Torn != int64(len(partial)) {
				t.Errorf("segment 2: PrevEnd %d Torn %d, want %d and %d", m.b.PrevEnd, m.b.Torn, end1, len(partial))
			}
		}
	}
	if got := r.s.Stats().TornBytes; got != int64(len(partial)) {
		t.Errorf("Stats.TornBytes = %d, want %d", got, len(partial))
	}
}

func TestWaitsOnPartialFrameOfLiveWriter(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	whole, _ := format.AppendTx(nil, tx(7))
	_, end := seg{num: 1, txs: 5, tail: whole[:10]}.write(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, format.Position{Segment: 1, Offset: end}, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // several polls: it must wait, not ship or fail
	if got := r.s.Stats().Acked; got.Offset != end {
		t.Fatalf("acked %v with a partial frame at %d", got, end)
	}
	// The write completes: the frame ships.
	f, err := os.OpenFile(filepath.Join(dir, format.SegmentName("orders", 1)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(whole[10:])
	f.Close()
	r.waitAcked(t, format.Position{Segment: 1, Offset: end + int64(len(whole))}, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), format.Position{Segment: 1, Offset: end + int64(len(whole))})
}

func TestSourceStopsLoudly(t *testing.T) {
	const corruptTx = 20
	cases := []struct {
		name    string
		segs    []seg
		want    error
		file    string // the error names this file
		ackedTo func(offs [][]int64, ends []int64) format.Position
	}{
		{
			name: "MidFileCorruption",
			segs: []seg{{num: 1, txs: 50, mangle: func(b []byte, offs []int64) { b[offs[corruptTx]+20] ^= 0xff }}},
			want: format.ErrChecksum, file: format.SegmentName("orders", 1),
			ackedTo: func(offs [][]int64, _ []int64) format.Position {
				return format.Position{Segment: 1, Offset: offs[0][corruptTx]}
			},
		},
		{
			name: "CorruptionInAbandonedSegment",
			segs: []seg{
				{num: 1, txs: 50, mangle: func(b []byte, offs []int64) { b[offs[49]+20] ^= 0xff; b[offs[10]+30] ^= 0x01 }},
				{num: 2, txs: 3},
			},
			want: format.ErrChecksum, file: format.SegmentName("orders", 1),
			ackedTo: func(offs [][]int64, _ []int64) format.Position {
				return format.Position{Segment: 1, Offset: offs[0][10]}
			},
		},
		{
			// A length field in the middle of the newest segment that
			// runs past the end of the file, valid frames after it: it
			// used to look like a write in progress, waited on silently.
			name: "CorruptLengthInLiveSegment",
			segs: []seg{{num: 1, txs: 50, mangle: func(b []byte, offs []int64) {
				b[offs[corruptTx]+2] = 0x10 // the length becomes ~1 MiB more
			}}},
			want: format.ErrCorrupt, file: format.SegmentName("orders", 1),
			ackedTo: func(offs [][]int64, _ []int64) format.Position {
				return format.Position{Segment: 1, Offset: offs[0][corruptTx]}
			},
		},
		{
			name: "GapInChain",
			segs: []seg{{num: 1, txs: 5, seal: true}, {num: 3, txs: 5}},
			want: tail.ErrGap, file: format.SegmentName("orders", 3),
			ackedTo: func(_ [][]int64, ends []int64) format.Position {
				return format.Position{Segment: 1, Offset: ends[0]}
			},
		},
		{
			name: "HeaderDoesNotMatchName",
			segs: []seg{{num: 1, txs: 5, seal: true}, {num: 2, header: 7, txs: 5}},
			want: tail.ErrHeader, file: format.SegmentName("orders", 2),
			ackedTo: func(_ [][]int64, ends []int64) format.Position {
				return format.Position{Segment: 1, Offset: ends[0]}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, nc := startServer(t, 0)
			c := newClient(t, nc)
			dir := t.TempDir()
			var offs [][]int64
			var ends []int64
			for _, s := range tc.segs {
				o, e := s.write(t, dir, "orders")
				offs, ends = append(offs, o), append(ends, e)
			}
			s, err := runOnce(t, c, dir, "orders")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.file) {
				t.Errorf("error %q does not name %s", err, tc.file)
			}
			want := tc.ackedTo(offs, ends)
			if got := s.Stats().Acked; got != want {
				t.Errorf("acked %v, want %v (everything before the fault, nothing after)", got, want)
			}
			var pe *format.PositionError
			if errors.As(err, &pe) && tc.want == format.ErrChecksum && pe.Offset != want.Offset {
				t.Errorf("error offset %d, want %d", pe.Offset, want.Offset)
			}
		})
	}
}

func TestShrinkingFileStops(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	_, end := seg{num: 1, txs: 50}.write(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, format.Position{Segment: 1, Offset: end}, 10*time.Second)
	path := filepath.Join(dir, format.SegmentName("orders", 1))
	if err := os.Truncate(path, end-100); err != nil {
		t.Fatal(err)
	}
	err := r.waitErr(t, 10*time.Second)
	if !errors.Is(err, tail.ErrShrunk) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Run = %v, want ErrShrunk naming %s", err, path)
	}
}

func TestHugeTransactionShipsInParts(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 10, 1, 200)
	// 100 MB in one transaction: 100 changes of 1 MB.
	big := &format.Tx{CommitTime: time.Now().UnixNano(), ID: "big"}
	row := []byte(strings.Repeat(`{"sku":"ABC-123","qty":7,"price":"19.99"},`, 1<<20/42))
	for i := 0; i < 100; i++ {
		big.Changes = append(big.Changes, format.Change{Table: "lines", Op: format.OpInsert, Key: []byte(fmt.Sprint("line-", i)), After: row})
	}
	if _, err := w.Commit(big); err != nil {
		t.Fatal(err)
	}
	big = nil
	writeTxs(t, w, 10, 10, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, end, 60*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	msgs := readBack(t, nc, c.Subject("orders"))
	parts := 0
	for _, m := range msgs {
		if m.b.Parts > 1 {
			parts++
			if m.b.Changes != 100 || m.b.Frames != 1 {
				t.Errorf("part %d/%d counts %d frames %d changes, want the whole frame's 1 and 100", m.b.Part, m.b.Parts, m.b.Frames, m.b.Changes)
			}
		}
	}
	if parts < 100 {
		t.Errorf("%d parts for a 100 MB transaction under a 1 MB max_payload", parts)
	}
	checkExact(t, dir, "orders", msgs, end)
	if got := r.s.Stats().Changes; got != 120 {
		t.Errorf("Stats.Changes = %d, want 120", got)
	}
}

func TestRetentionNeverDeletesUnacked(t *testing.T) {
	_, nc := startServer(t, 0)
	// A stream that refuses messages once it holds 40 KB: the shipper
	// ships the first segments, then every publish fails.
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"},
		Storage: jetstream.FileStorage, MaxBytes: 40 << 10, Discard: jetstream.DiscardNew, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(10<<10))
	writeTxs(t, w, 0, 300, 1, 200)
	w.Close()
	before, _ := format.ListSegments(dir, "orders")
	r := startShipper(t, c, dir, "orders", shipper.WithRetention(shipper.RetainDelete, time.Second, ""),
		shipper.WithMaxBatchBytes(4<<10), shipper.WithCodec(wire.CodecNone))
	time.Sleep(2500 * time.Millisecond)
	acked := r.s.Stats().Acked
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if acked.Segment < 3 || acked.Segment >= before[len(before)-1].Segment {
		t.Fatalf("acked %v of %d segments: the test wants some acknowledged and some not", acked, len(before))
	}
	after, _ := format.ListSegments(dir, "orders")
	left := map[uint64]bool{}
	for _, s := range after {
		left[s.Segment] = true
	}
	for _, s := range before {
		switch {
		case s.Segment >= acked.Segment && !left[s.Segment]:
			t.Errorf("segment %d deleted, but acknowledged only up to %v", s.Segment, acked)
		case s.Segment < acked.Segment && left[s.Segment]:
			t.Errorf("segment %d kept: acknowledged and older than the minimum age", s.Segment)
		}
	}
}

func TestRetentionArchivesShipped(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir, archive := t.TempDir(), t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(20<<10))
	writeTxs(t, w, 0, 500, 1, 200)
	w.Sync()
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders", shipper.WithRetention(shipper.RetainArchive, time.Second, archive))
	r.waitAcked(t, end, 10*time.Second)
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end) // before anything moves
	var segs []format.SegmentFile
	deadline := time.Now().Add(10 * time.Second)
	for {
		segs, _ = format.ListSegments(dir, "orders")
		if len(segs) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(segs) != 1 || segs[0].Segment != end.Segment {
		t.Fatalf("after retention: %v, want only segment %d (being written)", segs, end.Segment)
	}
	archived, _ := format.ListSegments(archive, "orders")
	if uint64(len(archived)) != end.Segment-1 {
		t.Errorf("%d segments archived, want %d", len(archived), end.Segment-1)
	}
	// The writer goes on; the shipper keeps shipping after retention.
	writeTxs(t, w, 500, 10, 1, 200)
	w.Close()
	r.waitAcked(t, endOf(t, dir, "orders"), 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}
