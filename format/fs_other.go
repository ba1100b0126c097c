//go:build !linux

package format

import (
	"errors"
	"os"
)

// preallocate is unsupported here: segments grow as they are written.
func preallocate(f *os.File, size int64) error { return errors.ErrUnsupported }

// syncData makes f's data durable.
func syncData(f *os.File) error { return f.Sync() }
