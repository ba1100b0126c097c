package format_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// plainReader hides every method but Read: a Reader over it cannot scan the
// input in place and buffers it instead.
type plainReader struct{ r io.Reader }

func (p plainReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// walkResult is how reading a segment went: every frame's offset and the
// final error's kind and offset.
type walkResult struct {
	offs    []int64
	kind    string
	errOff  int64
	sealed  bool
	headerE bool
}

func walkAll(r io.Reader) walkResult {
	var res walkResult
	rd, err := format.NewReader(r, "seg")
	if err != nil {
		res.headerE = true
		res.kind = errKind(err)
		return res
	}
	for {
		_, err := rd.Next()
		if err != nil {
			res.kind = errKind(err)
			var pe *format.PositionError
			if errors.As(err, &pe) {
				res.errOff = pe.Offset
			}
			_, res.sealed = rd.Sealed()
			return res
		}
		res.offs = append(res.offs, rd.Offset())
	}
}

func errKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{{io.EOF, "eof"}, {format.ErrTornTail, "torn"}, {format.ErrChecksum, "checksum"}, {format.ErrCorrupt, "corrupt"},
		{format.ErrBadMagic, "magic"}, {format.ErrVersion, "version"}, {format.ErrScanLimit, "limit"}} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other: " + err.Error()
}

// naiveFind is FindFrame's definition, over bytes in memory.
func naiveFind(b []byte, from int) int {
	for i := from; i+format.FrameHeaderLen <= len(b); i++ {
		f, _, err := format.ParseFrame(b[i:])
		if err != nil {
			continue
		}
		ok := f.Type.KnownIn(format.Version) && f.Type.PlausibleLen(len(f.Payload))
		if ok {
			return i
		}
	}
	return -1
}

// FuzzWalk is the one fuzz target of the frame rules (Walker) and of the
// torn-tail-or-corruption scan (FindFrame): a Reader that scans its input in
// place and one that buffers it must read the same frames and end the same
// way, and FindFrame must find what a scan in memory finds.
func FuzzWalk(f *testing.F) {
	for _, b := range goldenFiles(f) {
		f.Add(b)
		// A preallocated segment: zeros after the frames, and zeros with
		// a frame after them (damage).
		f.Add(append(bytes.Clone(b), make([]byte, 300)...))
		if h, err := format.ParseHeader(b); err == nil {
			f.Add(append(append(bytes.Clone(b[:h.Len]), make([]byte, 40)...), b[h.Len:]...))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var at, plain walkResult
		allocBound(t, 4*uint64(len(data))+3<<20, func() { at = walkAll(bytes.NewReader(data)) })
		plain = walkAll(plainReader{bytes.NewReader(data)})
		if at.kind != plain.kind || at.errOff != plain.errOff || at.sealed != plain.sealed || len(at.offs) != len(plain.offs) {
			t.Fatalf("in place: %+v\nbuffered: %+v", at, plain)
		}
		for i := range at.offs {
			if at.offs[i] != plain.offs[i] {
				t.Fatalf("frame %d at %d in place, %d buffered", i, at.offs[i], plain.offs[i])
			}
		}
		got, err := format.FindFrame(bytes.NewReader(data), 0, int64(len(data)))
		if err != nil {
			if errors.Is(err, format.ErrScanLimit) {
				return
			}
			t.Fatal(err)
		}
		if want := naiveFind(data, 0); got != int64(want) {
			t.Fatalf("FindFrame = %d, a scan in memory finds %d", got, want)
		}
	})
}

// sparseSegment writes a segment of n transactions followed by tail bytes
// written as given and then extended, sparse, to size bytes.
func sparseSegment(t *testing.T, n int, tail []byte, size int64) (string, []int) {
	t.Helper()
	data, offs := buildSegment(t, 1, n, false)
	path := filepath.Join(t.TempDir(), format.SegmentName("shop", 1))
	if err := os.WriteFile(path, append(data, tail...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Skipf("no sparse files here: %v", err)
	}
	return path, offs
}

// TestReaderBoundedMemory reads segments whose rest is a 1 GiB sparse tail
// (zeros; 256 MiB here), behind a torn frame or a length field claiming it: the Reader
// tells torn tail from corruption by scanning the file in place, never
// buffering it (before: the whole rest, 3.2 GB RSS for this input).
func TestReaderBoundedMemory(t *testing.T) {
	const size = 256 << 20
	var big [9]byte
	binary.LittleEndian.PutUint32(big[:], size-200) // a length that the file holds
	big[8] = byte(format.FrameTx)
	for _, c := range []struct {
		name string
		tail []byte
		want string
	}{
		{"ZeroTail", nil, "eof"}, // preallocated space: no data yet
		{"LengthOverFile", []byte{0xff, 0xff, 0xff, 0x3f, 1, 2, 3, 4, 1}, "torn"},
		{"LengthInFile", big[:], "torn"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, offs := sparseSegment(t, 3, c.tail, size)
			var res walkResult
			allocBound(t, 16<<20, func() {
				f, err := format.OpenSegment(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				res = walkAll(f)
			})
			end := int64(offs[2] + (offs[2] - offs[1]))
			if c.want == "eof" {
				end = res.errOff // walkAll records no offset for a clean end
			}
			if res.kind != c.want || len(res.offs) != 3 || res.errOff != end {
				t.Fatalf("read %+v, want 3 frames then %s after them", res, c.want)
			}
		})
	}
}

// TestReaderBigFrame reads a valid frame larger than the Reader's buffer:
// its CRC is checked in pieces first, then it is read whole.
func TestReaderBigFrame(t *testing.T) {
	data, _ := buildSegment(t, 1, 1, false)
	img := bytes.Repeat([]byte("x"), 3<<20)
	data, err := format.AppendTx(data, &format.Tx{CommitTime: 1, Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Content: format.ContentBinary, Key: []byte("k"), After: img}}})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	for _, c := range []struct {
		name string
		data []byte
		want string
		n    int
	}{{"Valid", data, "eof", 2}, {"BadCRC", bad, "torn", 1}} {
		t.Run(c.name, func(t *testing.T) {
			res := walkAll(bytes.NewReader(c.data))
			if res.kind != c.want || len(res.offs) != c.n {
				t.Fatalf("read %+v, want %d frames then %s", res, c.n, c.want)
			}
		})
	}
}

// TestOpenSegmentRefusesOddFiles: a FIFO, a directory or a symbolic link
// named like a segment is refused with ErrNotRegular at once (a FIFO used to
// block the open forever), by OpenReader and by ListSegments.
func TestOpenSegmentRefusesOddFiles(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(path string) error
	}{
		{"FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"Directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"Symlink", func(p string) error {
			target := filepath.Join(filepath.Dir(p), "target")
			data, _ := buildSegment(t, 1, 1, false)
			if err := os.WriteFile(target, data, 0o644); err != nil {
				return err
			}
			return os.Symlink(target, p)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, format.SegmentName("shop", 1))
			if err := c.make(path); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, f, err := format.OpenReader(path, 0)
				if f != nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, format.ErrNotRegular) {
					t.Fatalf("OpenReader: %v, want ErrNotRegular", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("OpenReader blocked")
			}
			if _, err := format.ListSegments(dir, "shop"); !errors.Is(err, format.ErrNotRegular) {
				t.Fatalf("ListSegments: %v, want ErrNotRegular", err)
			}
		})
	}
}

// TestWriterLockFileNeverFollowsLinks: a symbolic link where the lock file
// belongs is refused; the writer used to rewrite and truncate its target.
func TestWriterLockFileNeverFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "shop.lock")); err != nil {
		t.Fatal(err)
	}
	w, err := format.OpenWriter(dir, "shop")
	if err == nil {
		w.Close()
	}
	if !errors.Is(err, format.ErrNotRegular) {
		t.Fatalf("OpenWriter: %v, want ErrNotRegular", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Fatalf("the link's target holds %q", b)
	}
}
