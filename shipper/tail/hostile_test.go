package tail_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/shipper/tail"
)

// segmentBytes returns segment seg of source "s" with n transactions (a
// seal if sealed) and a header extended by ext bytes (SPEC.md: readers
// accept header lengths up to 292).
func segmentBytes(t *testing.T, seg uint64, n int, sealed bool, ext int) []byte {
	t.Helper()
	b, err := format.AppendHeader(nil, format.SegmentHeader{Source: "s", Segment: seg, Created: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ext > 0 {
		body := b[:len(b)-4]
		body = append(body, make([]byte, ext)...)
		binary.LittleEndian.PutUint16(body[10:], uint16(len(body)+4))
		b = binary.LittleEndian.AppendUint32(body, format.Checksum(body))
	}
	for k := 0; k < n; k++ {
		tx := &format.Tx{CommitTime: int64(1000 + k), Changes: []format.Change{{Table: "t", Op: format.OpInsert, Key: []byte(fmt.Sprint(k)), After: []byte(`{"a":1}`)}}}
		if b, err = format.AppendTx(b, tx); err != nil {
			t.Fatal(err)
		}
	}
	if sealed {
		b = format.AppendSeal(b, format.Seal{Next: seg + 1, Transactions: uint64(n), Changes: uint64(n), Time: 5000})
	}
	return b
}

func writeSeg(t *testing.T, dir string, seg uint64, b []byte) string {
	t.Helper()
	path := filepath.Join(dir, format.SegmentName("s", seg))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fillUntil calls Fill (consuming spans) until it fails or n calls in a row
// returned nothing, and returns the spans and the error.
func fillUntil(t *testing.T, fl *tail.Follower, n int) ([]tail.Span, error) {
	t.Helper()
	var out []tail.Span
	for idle := 0; idle < n; {
		s, err := fl.Fill()
		if err != nil {
			return out, err
		}
		if s.Len() == 0 {
			idle++
			continue
		}
		idle = 0
		out = append(out, s)
		fl.Consume(s)
	}
	return out, nil
}

// TestLongHeader: a header longer than 101 bytes (here 200 bytes of
// extension) is read; the shipper used to read only 101 bytes and wait for
// the rest forever.
func TestLongHeader(t *testing.T) {
	dir := t.TempDir()
	b := segmentBytes(t, 1, 3, false, 200)
	h, err := format.ParseHeader(b)
	if err != nil || h.Len <= 238 {
		t.Fatalf("header %+v, %v", h, err)
	}
	writeSeg(t, dir, 1, b)
	fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	spans, err := fillUntil(t, fl, 2)
	if err != nil || len(spans) != 1 || spans[0].From != int64(h.Len) || spans[0].To != int64(len(b)) || spans[0].Frames != 3 {
		t.Fatalf("spans %+v, err %v; want the 3 frames after a %d-byte header", spans, err, h.Len)
	}
}

// TestCorruptLengthInLiveSegment: a length field in the middle of the
// newest segment that runs past the end of the file, with valid frames
// after it, is corruption as soon as the file stops growing — not a write
// in progress to wait for until a later segment appears.
func TestCorruptLengthInLiveSegment(t *testing.T) {
	for _, c := range []struct {
		name   string
		length uint32
	}{{"InBuffer", 5000}, {"Big", 500 << 20}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			b := segmentBytes(t, 1, 5, false, 0)
			h, err := format.ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			hdr := h.Len
			frame := (len(b) - hdr) / 5
			second := hdr + frame
			binary.LittleEndian.PutUint32(b[second:], c.length)
			writeSeg(t, dir, 1, b)
			fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{MaxBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			spans, err := fillUntil(t, fl, 5)
			var pe *format.PositionError
			if !errors.Is(err, format.ErrCorrupt) || !errors.As(err, &pe) || pe.Offset != int64(second) {
				t.Fatalf("spans %+v, err %v; want corruption at offset %d", spans, err, second)
			}
			if len(spans) != 1 || spans[0].To != int64(second) {
				t.Fatalf("spans %+v; want the first frame shipped before the fault", spans)
			}
		})
	}
}

// TestTornTailInLiveSegmentWaits: a partial last frame with nothing valid
// after it is a write in progress (or a crash) and is waited on, however
// often the Follower looks.
func TestTornTailInLiveSegmentWaits(t *testing.T) {
	dir := t.TempDir()
	b := segmentBytes(t, 1, 5, false, 0)
	writeSeg(t, dir, 1, b[:len(b)-7])
	fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if spans, err := fillUntil(t, fl, 5); err != nil || len(spans) != 1 || spans[0].Frames != 4 {
		t.Fatalf("spans %+v, err %v; want 4 frames and a wait", spans, err)
	}
}

// TestCrashImages: segments that hold no frame — a first segment that holds
// only its header, one abandoned while its header was written — are
// skipped, and the next segment's PrevEnd still names what a receiver
// applied: the chain's start (0), or the end of the last segment with
// frames (PrevSegment). Both used to stop the source or the receiver.
func TestCrashImages(t *testing.T) {
	hdrOnly := segmentBytes(t, 0, 0, false, 0)
	for _, c := range []struct {
		name        string
		segs        [][]byte // segment 1, 2, …
		wantSeg     uint64   // the segment of the span after the frameless ones
		wantPrevEnd func(segs [][]byte) int64
		wantPrevSeg uint64
		wantTorn    int64
	}{
		{"HeaderOnlyFirst", [][]byte{hdrOnly, segmentBytes(t, 2, 2, false, 0)}, 2, func([][]byte) int64 { return 0 }, 0, 0},
		{"TornHeaderFirst", [][]byte{hdrOnly[:20], segmentBytes(t, 2, 2, false, 0)}, 2, func([][]byte) int64 { return 0 }, 0, 20},
		{"EmptyFileFirst", [][]byte{{}, {}, segmentBytes(t, 3, 2, false, 0)}, 3, func([][]byte) int64 { return 0 }, 0, 0},
		{"TornHeaderMiddle", [][]byte{segmentBytes(t, 1, 2, false, 0), hdrOnly[:30], segmentBytes(t, 3, 2, false, 0)}, 3,
			func(s [][]byte) int64 { return int64(len(s[0])) }, 1, 30},
		{"TwoFramelessMiddle", [][]byte{segmentBytes(t, 1, 2, true, 0), segmentBytes(t, 2, 0, false, 0), {}, segmentBytes(t, 4, 2, false, 0)}, 4,
			func(s [][]byte) int64 { return int64(len(s[0])) }, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, b := range c.segs {
				seg := uint64(i + 1)
				if len(b) >= format.MinHeaderLen+1 {
					// Renumber the header (built for another segment).
					if h, err := format.ParseHeader(b); err == nil && h.Segment != seg {
						b = append(segmentBytes(t, seg, 0, false, 0), b[h.Len:]...)
					}
				}
				writeSeg(t, dir, seg, b)
			}
			fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{ListEvery: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			spans, err := fillUntil(t, fl, 3)
			if err != nil {
				t.Fatalf("Fill: %v (spans %+v)", err, spans)
			}
			last := spans[len(spans)-1]
			if last.Segment != c.wantSeg || last.PrevEnd != c.wantPrevEnd(c.segs) || last.PrevSegment != c.wantPrevSeg || last.Torn != c.wantTorn {
				t.Fatalf("last span %+v; want segment %d PrevEnd %d PrevSegment %d Torn %d", last, c.wantSeg, c.wantPrevEnd(c.segs), c.wantPrevSeg, c.wantTorn)
			}
		})
	}
}

// TestSegmentRemovedAndCreatedAgain: a writer that cannot write a new
// segment's header (a full disk) removes the file and later creates the same
// number again (format.Writer.abandonSegment). A Follower that opened the
// first file must read the second one, not stop on a missing segment (as
// the shipper did when the file vanished under it) nor skip it as abandoned
// once a later segment appears.
func TestSegmentRemovedAndCreatedAgain(t *testing.T) {
	for _, c := range []struct {
		name  string
		first []byte // what the failed writer left of segment 2 before removing it
	}{
		{"TornHeader", segmentBytes(t, 2, 0, false, 0)[:25]},
		{"EmptyFile", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSeg(t, dir, 1, segmentBytes(t, 1, 3, true, 0))
			path := writeSeg(t, dir, 2, c.first)
			fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{ListEvery: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			spans, err := fillUntil(t, fl, 3)
			if err != nil || len(spans) != 1 || spans[0].Frames != 4 {
				t.Fatalf("segment 1: spans %+v, err %v; want its 4 frames", spans, err)
			}
			if fl.Pos().Segment != 2 {
				t.Fatalf("at %v, want on segment 2", fl.Pos())
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if spans, err := fillUntil(t, fl, 3); err != nil || len(spans) != 0 {
				t.Fatalf("segment 2 removed: spans %+v, err %v; want a wait", spans, err)
			}
			writeSeg(t, dir, 2, segmentBytes(t, 2, 5, true, 0))
			writeSeg(t, dir, 3, segmentBytes(t, 3, 2, false, 0))
			spans, err = fillUntil(t, fl, 3)
			if err != nil {
				t.Fatalf("segment 2 created again: %v (spans %+v)", err, spans)
			}
			frames := map[uint64]int{}
			for _, s := range spans {
				frames[s.Segment] += s.Frames
			}
			if frames[2] != 6 || frames[3] != 2 {
				t.Fatalf("frames per segment %v; want 6 in segment 2 (5 and its seal), 2 in segment 3", frames)
			}
			if spans[0].Segment != 2 || spans[0].PrevEnd != int64(len(segmentBytes(t, 1, 3, true, 0))) || spans[0].Torn != 0 {
				t.Fatalf("first span %+v; want segment 2 following segment 1's end, nothing torn", spans[0])
			}
		})
	}
}

// TestOddFilesRefused: a FIFO (or directory, or symbolic link) named like
// the next segment stops the Follower with ErrNotRegular instead of
// blocking it in open(2) forever.
func TestOddFilesRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(string) error
	}{
		{"FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"Directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"Symlink", func(p string) error { return os.Symlink("/etc/hostname", p) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSeg(t, dir, 1, segmentBytes(t, 1, 2, true, 0))
			if err := c.make(filepath.Join(dir, format.SegmentName("s", 2))); err != nil {
				t.Fatal(err)
			}
			fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			done := make(chan error, 1)
			go func() { _, err := fillUntil(t, fl, 3); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, format.ErrNotRegular) {
					t.Fatalf("Fill: %v, want ErrNotRegular", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("Fill blocked")
			}
		})
	}
}

// TestBoundedMemoryOnHugeBadFrame: a frame claiming 250 MiB that the
// (sparse) file holds but whose CRC fails is classified by scanning the
// file in place: the Follower used to read it whole into memory (6.3 GB RSS
// for a 1 GiB tail).
func TestBoundedMemoryOnHugeBadFrame(t *testing.T) {
	dir := t.TempDir()
	b := segmentBytes(t, 1, 2, false, 0)
	var h [9]byte
	binary.LittleEndian.PutUint32(h[:], 250<<20)
	h[8] = byte(format.FrameTx)
	path := writeSeg(t, dir, 1, append(b, h[:]...))
	if err := os.Truncate(path, int64(len(b))+9+250<<20+100); err != nil {
		t.Skip(err)
	}
	fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	spans, err := fillUntil(t, fl, 3)
	runtime.ReadMemStats(&after)
	if err != nil || len(spans) != 1 || spans[0].Frames != 2 {
		t.Fatalf("spans %+v, err %v; want 2 frames and a wait at the torn tail", spans, err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
		t.Fatalf("allocated %d MiB reading a segment with a 250 MiB torn frame", got>>20)
	}
}
