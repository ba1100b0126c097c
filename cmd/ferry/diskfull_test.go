package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// smallDisk mounts a tmpfs of size for the test (root only: skipped
// otherwise).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a small tmpfs (%v): run as root to test a full disk", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestWriteDiskFull: under --sync interval, ferry write on a disk that
// fills must not report the transactions it accepted as written (it used
// to: "N transactions written" for frames the disk never got); once space
// returns, a new ferry write works and the chain reads on.
func TestWriteDiskFull(t *testing.T) {
	disk := smallDisk(t, "256k")
	dir := filepath.Join(disk, "changes")
	var in strings.Builder
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&in, `{"table":"orders","op":"upsert","key":"%d","after":{"pad":"%s"}}`+"\n", i, strings.Repeat("p", 200))
	}
	_, stderr, code := runFerry(t, strings.NewReader(in.String()), "write", "--dir", dir, "--source", "shop", "--sync", "interval")
	if code == 0 {
		t.Fatalf("ferry write on a full disk: exit 0; stderr %s", stderr)
	}
	if strings.Contains(stderr, "written to") || !strings.Contains(stderr, "none of them is confirmed on disk") || !strings.Contains(stderr, "no space left") {
		t.Fatalf("stderr %q; want the failure named and nothing reported as written", stderr)
	}
	// Space returns: a new write goes into a new segment.
	if err := os.Truncate(filepath.Join(dir, "shop-00000000000000000001.ferry"), 0); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "shop-00000000000000000001.ferry"))
	_, stderr, code = runFerry(t, strings.NewReader(`{"table":"orders","op":"upsert","key":"after","after":{}}`+"\n"), "write", "--dir", dir, "--source", "shop")
	if code != 0 || !strings.Contains(stderr, "1 transactions, 1 changes written") {
		t.Fatalf("ferry write after space returned: exit %d, %s", code, stderr)
	}
}
