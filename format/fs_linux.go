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

// syncData makes f's data durable: fdatasync, which skips the inode's
// timestamps (an fsync journals them whenever the clock has moved on) but
// not its size or the blocks its data needs (SPEC.md, "Writers", step 4).
func syncData(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
