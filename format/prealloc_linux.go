//go:build linux

package format

import (
	"os"
	"syscall"
)

// preallocate reserves f's blocks up to size bytes (fallocate, mode 0: the
// file's size becomes size and the new space reads as zeros), so that later
// writes into it change no size and allocate no block.
func preallocate(f *os.File, size int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
		if err != syscall.EINTR {
			return err
		}
	}
}
