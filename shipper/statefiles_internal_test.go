package shipper

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// TestStateFilesNeverFollowLinks: the instance file and the checkpoint are
// opened without following a symbolic link and refused when they are not
// regular files. The shipper used to write its instance id through a link
// at DIR/<source>.ship-instance, truncating the link's target.
func TestStateFilesNeverFollowLinks(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(t *testing.T, path string) (check func())
	}{
		{"Symlink", func(t *testing.T, path string) func() {
			target := filepath.Join(t.TempDir(), "precious")
			if err := os.WriteFile(target, []byte("do not truncate me\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
			return func() {
				if b, err := os.ReadFile(target); err != nil || string(b) != "do not truncate me\n" {
					t.Fatalf("the link's target holds %q (%v)", b, err)
				}
			}
		}},
		{"FIFO", func(t *testing.T, path string) func() {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{"shop.ship-instance", "shop.ship-checkpoint"} {
				path := filepath.Join(dir, name)
				check := c.make(t, path)
				done := make(chan error, 1)
				go func() {
					var err error
					if name == "shop.ship-instance" {
						var in *instance
						if in, err = lockInstance(path, "shop"); err == nil {
							in.close()
						}
					} else {
						_, _, err = loadCheckpoint(path)
					}
					done <- err
				}()
				select {
				case err := <-done:
					if !errors.Is(err, format.ErrNotRegular) {
						t.Fatalf("%s: %v, want ErrNotRegular", name, err)
					}
				case <-time.After(time.Minute):
					t.Fatalf("%s: blocked", name)
				}
				check()
			}
		})
	}
}
