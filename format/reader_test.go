package format_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// testTx returns a small transaction numbered i.
func testTx(i int) *format.Tx {
	return &format.Tx{CommitTime: int64(1_700_000_000_000_000_000 + i), ID: fmt.Sprint("tx", i), Changes: []format.Change{
		{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: []byte(fmt.Sprintf(`{"id":%d,"total":12.5}`, i))},
		{Table: "order_lines", Op: format.OpDelete, Key: []byte(fmt.Sprint(i, "/1")), Before: []byte(`{"sku":"A1"}`)},
	}}
}

// buildSegment encodes a segment holding n test transactions (and a seal if
// sealed) and returns its bytes and the offset of every frame.
func buildSegment(t testing.TB, seg uint64, n int, sealed bool) ([]byte, []int) {
	t.Helper()
	b, err := format.AppendHeader(nil, format.SegmentHeader{Source: "shop", Segment: seg, Created: 1_700_000_000_000_000_000})
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for i := 0; i < n; i++ {
		offs = append(offs, len(b))
		if b, err = format.AppendTx(b, testTx(i)); err != nil {
			t.Fatal(err)
		}
	}
	if sealed {
		offs = append(offs, len(b))
		b = format.AppendSeal(b, format.Seal{Next: seg + 1, Transactions: uint64(n), Changes: uint64(2 * n), Time: 1_700_000_001_000_000_000})
	}
	return b, offs
}

// readFrames reads every frame of data until an error and returns the
// frames' offsets and the error (io.EOF at a clean end).
func readFrames(t *testing.T, data []byte) ([]int64, error) {
	t.Helper()
	return readFramesFrom(t, data, false)
}

// readFramesFrom is readFrames over an io.ReaderAt or, plain, a bare
// io.Reader (which the Reader has to buffer).
func readFramesFrom(t *testing.T, data []byte, plain bool) ([]int64, error) {
	t.Helper()
	var in io.Reader = bytes.NewReader(data)
	if plain {
		in = plainReader{in}
	}
	rd, err := format.NewReader(in, "seg")
	if err != nil {
		return nil, err
	}
	var offs []int64
	for {
		f, err := rd.Next()
		if err != nil {
			return offs, err
		}
		if f.Type == format.FrameTx {
			var tx format.Tx
			if err := format.DecodeTx(f.Payload, &tx); err != nil {
				t.Fatalf("frame at %d passed its CRC but does not decode: %v", rd.Offset(), err)
			}
		}
		offs = append(offs, rd.Offset())
	}
}

func wantPosErr(t *testing.T, err, sentinel error, off int) {
	t.Helper()
	var pe *format.PositionError
	if !errors.Is(err, sentinel) || !errors.As(err, &pe) {
		t.Fatalf("error %v, want %v as a *PositionError", err, sentinel)
	}
	if pe.Offset != int64(off) {
		t.Fatalf("error %v at offset %d, want offset %d", err, pe.Offset, off)
	}
}

func TestReaderTornTailAtEveryCut(t *testing.T) {
	data, offs := buildSegment(t, 1, 5, false)
	last := offs[4]
	for cut := last + 1; cut < len(data); cut++ {
		got, err := readFrames(t, data[:cut])
		wantPosErr(t, err, format.ErrTornTail, last)
		// The message says what the bytes are, never a negative length
		// ("4 bytes of a frame of -1").
		if msg := err.Error(); strings.Contains(msg, "-1") || strings.Contains(msg, "of -") {
			t.Fatalf("cut %d: %q", cut, msg)
		}
		if cut-last < format.FrameHeaderLen && !strings.Contains(err.Error(), "header") {
			t.Fatalf("cut %d inside the frame header: %q, want it to say so", cut, err)
		}
		if len(got) != 4 {
			t.Fatalf("cut %d: read %d frames before the torn tail, want 4", cut, len(got))
		}
	}
	// Cut exactly at a frame boundary: a clean end.
	if got, err := readFrames(t, data[:last]); err != io.EOF || len(got) != 4 {
		t.Fatalf("cut at a boundary: %d frames, %v; want 4, io.EOF", len(got), err)
	}
	// A header cut short is a torn tail too (a segment being created).
	for cut := 0; cut < offs[0]; cut++ {
		_, err := format.NewReader(bytes.NewReader(data[:cut]), "seg")
		if !errors.Is(err, format.ErrTornTail) {
			t.Fatalf("header cut at %d: %v, want ErrTornTail", cut, err)
		}
	}
}

// TestReaderZeroFilledTail: zeros at a frame boundary up to the end are
// space with no data yet (a preallocated segment, or a file system that
// extended the file and wrote nothing): the data ends there, nothing torn.
// Zeros inside a frame are a torn tail.
func TestReaderZeroFilledTail(t *testing.T) {
	data, offs := buildSegment(t, 1, 5, false)
	last := offs[4]
	zeros := func(prefix []byte, n int) []byte { return append(append([]byte(nil), prefix...), make([]byte, n)...) }
	cases := []struct {
		name   string
		data   []byte
		frames int // whole frames read
		torn   int // offset of the torn tail; -1: a clean end (io.EOF)
	}{
		// The file system extended the file but wrote no data, or the
		// writer preallocated it.
		{"ZerosAfterLastFrame", zeros(data, 4096), 5, -1},
		// The last frame's data was only partly written.
		{"LastFramePartlyZero", zeros(data[:last+20], len(data)-last-20+512), 4, last},
		// Nothing of the last frame reached the disk but its size did.
		{"LastFrameAllZero", zeros(data[:last], len(data)-last), 4, -1},
		// Fewer zeros than a frame header.
		{"FewZeros", zeros(data, 3), 5, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, plain := range []bool{false, true} {
				got, err := readFramesFrom(t, c.data, plain)
				if c.torn < 0 {
					if err != io.EOF {
						t.Fatalf("plain %v: error %v, want io.EOF", plain, err)
					}
				} else {
					wantPosErr(t, err, format.ErrTornTail, c.torn)
				}
				if len(got) != c.frames {
					t.Fatalf("plain %v: read %d frames, want %d", plain, len(got), c.frames)
				}
			}
		})
	}
}

func TestReaderCorruptMiddleFrame(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		data, offs := buildSegment(t, 1, 5, sealed)
		start, end := offs[2], offs[3]
		for i := start; i < end; i++ {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				region := "payload"
				switch {
				case i < start+4:
					region = "length"
				case i < start+8:
					region = "crc"
				case i == start+8:
					region = "type"
				}
				bad := append([]byte(nil), data...)
				bad[i] ^= mask
				got, err := readFrames(t, bad)
				if !errors.Is(err, format.ErrChecksum) && !errors.Is(err, format.ErrCorrupt) {
					t.Fatalf("sealed=%v byte %d (%s) ^%#x: %v, want ErrChecksum or ErrCorrupt", sealed, i, region, mask, err)
				}
				wantPosErr(t, err, errors.Unwrap(err.(*format.PositionError).Err), start)
				if len(got) != 2 {
					t.Fatalf("sealed=%v byte %d (%s): read %d frames before the corruption, want 2", sealed, i, region, len(got))
				}
			}
		}
	}
}

func TestReaderCorruptionIsSticky(t *testing.T) {
	data, offs := buildSegment(t, 1, 5, true)
	data[offs[1]+12] ^= 0xff
	rd, err := format.NewReader(bytes.NewReader(data), "seg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	_, err1 := rd.Next()
	_, err2 := rd.Next()
	if !errors.Is(err1, format.ErrChecksum) || err1 != err2 {
		t.Fatalf("errors %v then %v, want the same ErrChecksum twice", err1, err2)
	}
}

func TestReaderDataAfterSeal(t *testing.T) {
	data, offs := buildSegment(t, 1, 3, true)
	end := len(data)
	data = format.AppendHeartbeat(data, 5)
	got, err := readFrames(t, data)
	wantPosErr(t, err, format.ErrCorrupt, end)
	if len(got) != 4 || got[3] != int64(offs[3]) {
		t.Fatalf("frames %v before the error, want 4 ending with the seal at %d", got, offs[3])
	}
}

func TestReaderSealMustNameNextSegment(t *testing.T) {
	data, _ := buildSegment(t, 7, 2, false)
	at := len(data)
	data = format.AppendSeal(data, format.Seal{Next: 9, Transactions: 2, Changes: 4})
	_, err := readFrames(t, data)
	wantPosErr(t, err, format.ErrCorrupt, at)
}

func TestReaderFrameTypes(t *testing.T) {
	data, _ := buildSegment(t, 1, 1, false)
	skip := len(data)
	data = format.AppendFrame(data, format.FrameType(200), []byte("from the future"))
	data = format.AppendHeartbeat(data, 42)
	got, err := readFrames(t, data)
	if err != io.EOF || len(got) != 3 || got[1] != int64(skip) {
		t.Fatalf("frames %v, %v; want 3 frames (tx, skippable, heartbeat) then io.EOF", got, err)
	}
	unknown := format.AppendFrame(data[:skip:skip], format.FrameType(50), []byte("x"))
	_, err = readFrames(t, unknown)
	wantPosErr(t, err, format.ErrCorrupt, skip)
}

func TestReaderFollowsGrowingFile(t *testing.T) {
	data, offs := buildSegment(t, 1, 3, true)
	path := filepath.Join(t.TempDir(), format.SegmentName("shop", 1))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	write := func(b []byte) {
		t.Helper()
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write(data[:offs[1]])
	rd, rf, err := format.OpenReader(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	next := func(wantOff int, wantErr error) {
		t.Helper()
		_, err := rd.Next()
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Fatalf("Next: %v, want %v", err, wantErr)
			}
			return
		}
		if err != nil || rd.Offset() != int64(wantOff) {
			t.Fatalf("Next: frame at %d, %v; want frame at %d", rd.Offset(), err, wantOff)
		}
	}
	next(offs[0], nil)
	next(0, io.EOF)
	write(data[offs[1] : offs[1]+7])
	next(0, format.ErrTornTail)
	write(data[offs[1]+7 : offs[2]+30])
	next(offs[1], nil)
	next(0, format.ErrTornTail)
	write(data[offs[2]+30:])
	next(offs[2], nil)
	next(offs[3], nil)
	if s, ok := rd.Sealed(); !ok || s.Next != 2 || s.Transactions != 3 {
		t.Fatalf("Sealed() = %+v, %v; want next 2, 3 transactions", s, ok)
	}
	next(0, io.EOF)
	if got, want := rd.End(), int64(len(data)); got != want {
		t.Fatalf("End() = %d, want %d", got, want)
	}
	// Resume in the middle.
	rd2, rf2, err := format.OpenReader(path, int64(offs[2]))
	if err != nil {
		t.Fatal(err)
	}
	defer rf2.Close()
	if _, err := rd2.Next(); err != nil || rd2.Offset() != int64(offs[2]) {
		t.Fatalf("resumed reader: frame at %d, %v; want %d", rd2.Offset(), err, offs[2])
	}
}

func TestReaderHeaderErrors(t *testing.T) {
	good, _ := buildSegment(t, 3, 1, false)
	mod := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"BadMagic", mod(func(b []byte) { b[0] = 'X' }), format.ErrBadMagic},
		{"NotASegment", []byte("hello world, this is not a segment file at all"), format.ErrBadMagic},
		{"NewerVersion", mod(func(b []byte) { b[8] = 3 }), format.ErrVersion},
		{"HeaderChecksum", mod(func(b []byte) { b[20] ^= 1 }), format.ErrChecksum},
		{"HeaderLength", mod(func(b []byte) { b[10] = 5 }), format.ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := format.NewReader(bytes.NewReader(c.data), "seg")
			if !errors.Is(err, c.want) {
				t.Fatalf("NewReader: %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeTxRejects(t *testing.T) {
	payload := func(tx *format.Tx) []byte {
		b, err := format.AppendTx(nil, tx)
		if err != nil {
			t.Fatal(err)
		}
		return b[format.FrameHeaderLen:]
	}
	good := payload(testTx(1))
	var tx format.Tx
	if err := format.DecodeTx(good, &tx); err != nil {
		t.Fatal(err)
	}
	// Non-minimal varint: the id length 4 written as 0x84 0x00.
	idLen := 9
	if good[idLen] != 3 {
		t.Fatalf("test assumes a 3-byte id, got length byte %d", good[idLen])
	}
	nonMin := append(append(append([]byte(nil), good[:idLen]...), 0x83, 0x00), good[idLen+1:]...)
	cases := map[string][]byte{
		"Empty":            nil,
		"Truncated":        good[:len(good)-1],
		"Trailing":         append(append([]byte(nil), good...), 0),
		"NonMinimalVarint": nonMin,
		"Flags":            append(append(append([]byte(nil), good[:8]...), 2), good[9:]...),
	}
	for name, b := range cases {
		if err := format.DecodeTx(b, &tx); !errors.Is(err, format.ErrCorrupt) {
			t.Errorf("%s: DecodeTx = %v, want ErrCorrupt", name, err)
		}
	}
}
