package store

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestBufferedFile writes a file through the write buffer in chunks of every
// size around the buffer's, interleaved with the calls that must see every
// byte written so far (Stat, ReadAt, Sync, SyncTo), and checks what they see
// and the file's final content.
func TestBufferedFile(t *testing.T) {
	fs := bufferedFS{FS: vfs.NewMem()}
	f, err := fs.Create("f", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want []byte
	sizes := []int{0, 1, 4096, writeBufferSize - 1, writeBufferSize, writeBufferSize + 1, 3 * writeBufferSize}
	for i := 0; i < 200; i++ {
		n := sizes[rng.IntN(len(sizes))]
		if rng.IntN(2) == 0 {
			n = rng.IntN(64 << 10)
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		want = append(want, p...)
		if m, err := f.Write(bytes.Clone(p)); err != nil || m != n {
			t.Fatalf("write %d: %d, %v", n, m, err)
		}
		switch rng.IntN(5) {
		case 0:
			st, err := f.Stat()
			if err != nil || st.Size() != int64(len(want)) {
				t.Fatalf("Stat after %d bytes: %v, %v", len(want), st, err)
			}
		case 1:
			if len(want) == 0 {
				break
			}
			off := rng.IntN(len(want))
			got := make([]byte, min(len(want)-off, 1000))
			if _, err := f.ReadAt(got, int64(off)); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[off:off+len(got)]) {
				t.Fatalf("ReadAt %d after %d bytes written: stale data", off, len(want))
			}
		case 2:
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		case 3:
			if _, err := f.SyncTo(int64(len(want))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := fs.Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes (%v), wrote %d: content differs", len(got), err, len(want))
	}
}

// failingFile fails every write after the first.
type failingFile struct {
	vfs.File
	writes int
}

var errDiskFull = errors.New("disk full")

func (f *failingFile) Write(p []byte) (int, error) {
	if f.writes++; f.writes > 1 {
		return 0, errDiskFull
	}
	return f.File.Write(p)
}

// TestBufferedFileWriteErrorSticks checks that a failed write of the buffer
// is reported, and again by every later call, so Pebble never syncs or
// closes a file with a hole as if it were whole.
func TestBufferedFileWriteErrorSticks(t *testing.T) {
	mem := vfs.NewMem()
	raw, err := mem.Create("f", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f := &bufferedFile{File: &failingFile{File: raw}}
	big := make([]byte, writeBufferSize)
	if _, err := f.Write(big); err != nil { // written through at once
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("lost")); err != nil { // buffered
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, errDiskFull) {
		t.Fatalf("Sync after a failed write: %v, want %v", err, errDiskFull)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, errDiskFull) {
		t.Fatalf("Write after a failed write: %v", err)
	}
	if err := f.Close(); !errors.Is(err, errDiskFull) {
		t.Fatalf("Close after a failed write: %v", err)
	}
}
