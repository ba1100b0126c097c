package store_test

import (
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
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

// fill fills the file system of dir but for about leave bytes with a
// filler file, and returns a function that removes it (space returns).
func fill(t *testing.T, dir string, leave int64) func() {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(max(n-leave, 0)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// bigTx is a transaction of n rows of 4 KiB that do not compress, keys
// prefix0..prefixN-1.
func bigTx(prefix string, n int) *format.Tx {
	tx := &format.Tx{CommitTime: time.Now().UnixNano()}
	for i := range n {
		r := make([]byte, 2<<10)
		crand.Read(r)
		pad := hex.EncodeToString(r)
		k := fmt.Sprintf("%s%d", prefix, i)
		tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpUpsert, Key: []byte(k), After: []byte(`{"pad":"` + pad + `"}`)})
	}
	return tx
}

// commitTx applies tx at off in a batch of its own and commits it; it
// returns the frame's end and the commit's error.
func commitTx(t *testing.T, b *store.Batch, off int64, seq uint64, tx *format.Tx) (int64, error) {
	t.Helper()
	frame, err := format.AppendTx(nil, tx)
	if err != nil {
		t.Fatal(err)
	}
	end := off + int64(len(frame))
	if err := b.ApplyTx("s", 1, off, end, seq, tx, frame); err != nil {
		return off, err
	}
	b.SetCursor(store.StreamCursor{Seq: seq, Created: 1})
	return end, b.Commit()
}

// TestDiskFullCommitResumes: a commit whose change log entries do not fit
// on the disk fails with an error
// IsDiskFull recognises, the store says so (DiskFull), keeps serving
// reads, and once space returns a new batch commits the same frame. It
// used to make every later write fail for good (the change log's end was
// "unknown" after a short write).
func TestDiskFullCommitResumes(t *testing.T) {
	disk := smallDisk(t, "24m")
	dir := filepath.Join(disk, "db")
	st, err := store.Open(dir, store.WithMemTableSize(1<<20), store.WithLogFileSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	off, err := commitTx(t, b, 45, 1, bigTx("a", 16))
	if err != nil {
		t.Fatal(err)
	}
	// Room for a commit (two memtables and the reserve), not for this
	// one's change log entries: its log write fails.
	free := fill(t, disk, store.DiskReserve+2<<20+256<<10)
	end, err := commitTx(t, b, off, 2, bigTx("b", 700))
	if err == nil || !store.IsDiskFull(err) || !strings.Contains(err.Error(), "change log") {
		t.Fatalf("a commit whose change log entries do not fit: %v, want a full-disk error writing the change log", err)
	}
	if e := st.DiskFull(); e == nil || !strings.Contains(e.Error(), dir) {
		t.Fatalf("DiskFull() = %v, want the condition naming %s", e, dir)
	}
	if _, ok, err := st.Get("t", []byte("a3")); !ok || err != nil {
		t.Fatalf("reading a committed row on a full disk: %v %v", ok, err)
	}
	if p := st.Position("s"); p.Offset != off {
		t.Fatalf("position after the failed commit: %d, want %d (the last commit that succeeded)", p.Offset, off)
	}
	// Space returns: a new batch commits the same frame.
	free()
	b.Close()
	b = st.NewBatch()
	if end, err = commitTx(t, b, off, 2, bigTx("b", 700)); err != nil {
		t.Fatalf("committing once space returned: %v", err)
	}
	if e := st.DiskFull(); e != nil {
		t.Fatalf("DiskFull() after a commit succeeded: %v", e)
	}
	b.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p := st.Position("s"); p.Offset != end {
		t.Fatalf("position after reopening: %d, want %d", p.Offset, end)
	}
	for _, k := range []string{"a0", "a15", "b0", "b699"} {
		if _, ok, err := st.Get("t", []byte(k)); !ok || err != nil {
			t.Fatalf("row %s after reopening: %v %v", k, ok, err)
		}
	}
	// The change log reads back every change, the failed write's torn
	// bytes overwritten.
	cs, err := st.Changes(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 16+700 || string(cs[16].Key) != "b0" {
		t.Fatalf("change log holds %d changes, want %d from a0 to b699", len(cs), 16+700)
	}
}

// TestDiskFullRefused: commits go on until the file system has less free
// than a commit needs (the flushes it may wait for, and DiskReserve); then
// they are refused at once, the store says so, and none stalls in Pebble
// waiting for a flush that finds no space — that stall made a receiver on a
// full disk deaf to SIGTERM. Once space returns the same batch commits.
func TestDiskFullRefused(t *testing.T) {
	disk := smallDisk(t, "24m")
	dir := filepath.Join(disk, "db")
	st, err := store.Open(dir, store.WithMemTableSize(1<<20), store.WithLogFileSize(1<<20), store.WithFlushInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := st.NewBatch()
	defer func() { b.Close() }()
	free := fill(t, disk, store.DiskReserve+2<<20+600<<10)
	off := int64(45)
	var seq uint64
	for seq = 1; ; seq++ {
		end, err := commitTx(t, b, off, seq, bigTx(fmt.Sprintf("k%d-", seq), 4))
		if err != nil {
			if !store.IsDiskFull(err) {
				t.Fatalf("commit %d: %v, want a full-disk error", seq, err)
			}
			break
		}
		off = end
		if seq > 1_000 {
			t.Fatal("1,000 commits of 16 KiB fitted into 600 KiB")
		}
	}
	if e := st.DiskFull(); e == nil || st.SpaceAvailable() {
		t.Fatalf("after a refused commit: DiskFull() = %v, SpaceAvailable() = %v", e, st.SpaceAvailable())
	}
	free()
	if st.SpaceAvailable() != true {
		t.Fatal("no space available once the filler is gone")
	}
	// The refused batch was kept: it commits as it is.
	if err := b.Commit(); err != nil {
		t.Fatalf("committing the refused batch once space returned: %v", err)
	}
	if p := st.Position("s"); p.StreamSeq != seq {
		t.Fatalf("position at stream seq %d, want %d", p.StreamSeq, seq)
	}
	if e := st.DiskFull(); e != nil {
		t.Fatalf("DiskFull() after a commit succeeded: %v", e)
	}
}

// TestDiskFullClose: Close on a disk too full for the memtable's flush
// returns instead of retrying the flush for ever (it used to hang there,
// which made a receiver on a full disk deaf to SIGTERM). What was not
// flushed is lost, as after a crash: reopened, the store holds a prefix of
// its commits.
func TestDiskFullClose(t *testing.T) {
	disk := smallDisk(t, "24m")
	dir := filepath.Join(disk, "db")
	st, err := store.Open(dir, store.WithMemTableSize(1<<20), store.WithLogFileSize(1<<20), store.WithFlushInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	ends := map[int64]bool{0: true}
	off := int64(45)
	for seq := uint64(1); seq <= 3; seq++ {
		end, err := commitTx(t, b, off, seq, bigTx(fmt.Sprintf("k%d-", seq), 8))
		if err != nil {
			t.Fatal(err)
		}
		off, ends[end] = end, true
	}
	b.Close()
	free := fill(t, disk, 0)
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	select {
	case err := <-closed:
		if err == nil || !store.IsDiskFull(err) {
			t.Fatalf("Close on a full disk: %v, want the full disk named", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Close on a full disk did not return (retrying the flush for ever?)")
	}
	free()
	st, err = store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p := st.Position("s"); !ends[p.Offset] {
		t.Fatalf("reopened at offset %d: not the end of a commit", p.Offset)
	}
}
