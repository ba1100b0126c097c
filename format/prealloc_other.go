//go:build !linux

package format

import (
	"errors"
	"os"
)

// preallocate is unsupported here: segments grow as they are written.
func preallocate(f *os.File, size int64) error { return errors.ErrUnsupported }
