//go:build !linux

package format

import (
	"errors"
	"os"
)

// preallocate is unsupported here: segments grow as they are written.
func preallocate(f *os.File, size int64) error { return errors.ErrUnsupported }

// DataSize returns where the data of the segment file f, of size bytes,
// ends: size, less the zeros of a preallocated tail (SPEC.md, "Writers",
// step 3).
func DataSize(f *os.File, size int64) (int64, error) { return DataEnd(f, 0, size) }
