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

// seekHole is lseek's SEEK_HOLE on Linux.
const seekHole = 4

// DataSize returns where the data of the segment file f, of size bytes,
// ends: size, less the zeros of a preallocated tail (SPEC.md, "Writers",
// step 3), found without reading reserved space that was never written
// (SEEK_HOLE stops at it).
func DataSize(f *os.File, size int64) (int64, error) {
	end := size
	if off, err := f.Seek(0, seekHole); err == nil && off < size {
		end = off
	}
	return DataEnd(f, max(0, end-scanChunk), end)
}
