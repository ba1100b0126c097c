package tail_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/shipper/tail"
)

// TestWatchCoalescedWakeUpsLoseNoWrite checks that a write made while the
// Watch pauses after a wake-up still wakes the caller once the pause ends,
// with or without coalescing.
func TestWatchCoalescedWakeUpsLoseNoWrite(t *testing.T) {
	for _, coalesce := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run(coalesce.String(), func(t *testing.T) {
			dir := t.TempDir()
			w, err := tail.NewWatch(dir, coalesce, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			f, err := os.Create(filepath.Join(dir, "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			woken := func(what string) {
				t.Helper()
				select {
				case <-w.C():
				case <-time.After(5 * time.Second):
					t.Fatalf("no wake-up after %s", what)
				}
			}
			woken("the create")
			for i := 0; i < 20; i++ {
				if _, err := f.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			woken("a burst of writes")
			// Let the burst's last events through, then write twice: the
			// second write lands while the Watch pauses after the first's
			// wake-up, and must wake the caller when the pause ends.
			time.Sleep(2*coalesce + 20*time.Millisecond)
			select {
			case <-w.C():
			default:
			}
			if _, err := f.Write([]byte("y")); err != nil {
				t.Fatal(err)
			}
			woken("a lone write")
			if _, err := f.Write([]byte("z")); err != nil {
				t.Fatal(err)
			}
			woken("the last write")
		})
	}
}

func TestWatchRejectsNegativeCoalescing(t *testing.T) {
	if _, err := tail.NewWatch(t.TempDir(), -time.Millisecond, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("NewWatch accepted a negative coalescing interval")
	}
}
