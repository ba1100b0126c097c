package format

import (
	"errors"
	"os"
	"testing"
)

// TestWriterErrorsStick breaks the segment file under a live Writer: the
// failed write is reported and every later call returns the same error.
func TestWriterErrorsStick(t *testing.T) {
	w, err := OpenWriter(t.TempDir(), "shop", WithSync(SyncAlways, 0))
	if err != nil {
		t.Fatal(err)
	}
	tx := &Tx{Changes: []Change{{Table: "t", Op: OpInsert, Key: []byte("1")}}}
	if _, err := w.Commit(tx); err != nil {
		t.Fatal(err)
	}
	w.ioMu.Lock()
	w.f.Close()
	w.ioMu.Unlock()
	_, err1 := w.Commit(tx)
	if err1 == nil || !errors.Is(err1, os.ErrClosed) {
		t.Fatalf("Commit on a broken file: %v, want the write error", err1)
	}
	if _, err2 := w.Commit(tx); err2 != err1 {
		t.Fatalf("second Commit: %v, want the same error %v", err2, err1)
	}
	if err := w.Sync(); err != err1 {
		t.Fatalf("Sync: %v, want %v", err, err1)
	}
	if err := w.Rotate(); err != err1 {
		t.Fatalf("Rotate: %v, want %v", err, err1)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close of a failed writer returned nil")
	}
}
