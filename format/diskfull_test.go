package format_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// smallDisk mounts a tmpfs of size bytes for the test (root only: skipped
// otherwise) and returns its path.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a small tmpfs (%v): run as root to test a full disk", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fillDisk writes a file until the disk is full and returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	for _, n := range []int{512, 64, 1} { // the last partial block
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	return path
}

// TestDiskFullAtSegmentCreation: a writer that cannot write a new
// segment's header (the disk is full) removes the file: it used to leave an
// empty segment that stopped the shipper, and then a gap once an operator
// removed it. Once space returns the next writer creates the same number.
func TestDiskFullAtSegmentCreation(t *testing.T) {
	dir := smallDisk(t, "64k")
	w, err := format.OpenWriter(dir, "shop", format.WithSync(format.SyncAlways, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(testTx(1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	filler := fillDisk(t, dir)
	if w, err := format.OpenWriter(dir, "shop"); err == nil {
		w.Close()
		t.Fatal("OpenWriter on a full disk succeeded")
	} else if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("OpenWriter: %v, want ENOSPC", err)
	}
	segs, err := format.ListSegments(dir, "shop")
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments after the failure: %+v, %v; want only segment 1 (no empty segment 2)", segs, err)
	}
	os.Remove(filler)
	w, err = format.OpenWriter(dir, "shop")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := w.Segment(); got != 2 {
		t.Fatalf("writer after space returned writes segment %d, want 2", got)
	}
}
