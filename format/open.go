package format

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular means a path named like a segment (or a state file) that is
// not a regular file: a FIFO, a device, a directory, a socket or a symbolic
// link. Reading a FIFO blocks forever and a link lets a writer clobber
// whatever it points to, so readers and writers refuse them.
var ErrNotRegular = errors.New("format: not a regular file")

// OpenSegment opens the segment file at path for reading without following
// a symbolic link and without blocking on a FIFO, and refuses anything but a
// regular file with an error wrapping ErrNotRegular that names the path and
// what it is.
func OpenSegment(path string) (*os.File, error) {
	return OpenRegular(path, os.O_RDONLY, 0)
}

// OpenRegular opens path with flag (os.O_RDONLY, os.O_RDWR|os.O_CREATE…)
// and perm like os.OpenFile, but never follows a symbolic link at path,
// never blocks on a FIFO, and refuses anything but a regular file
// (ErrNotRegular). Writers and the shipper open every file they keep in a
// segment directory with it.
func OpenRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link; move it away and put the file itself there", ErrNotRegular, path)
		}
		if fi, serr := os.Lstat(path); serr == nil && !fi.Mode().IsRegular() {
			return nil, notRegular(path, fi.Mode())
		}
		return nil, fmt.Errorf("format: opening %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("format: stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notRegular(path, fi.Mode())
	}
	// O_NONBLOCK means nothing for a regular file's reads and writes on
	// Linux; it is cleared anyway so that nothing depends on that.
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, fmt.Errorf("format: opening %s: %w", path, err)
	}
	return f, nil
}

func notRegular(path string, m fs.FileMode) error {
	return fmt.Errorf("%w: %s is %s, not a regular file; move it out of the directory", ErrNotRegular, path, fileKind(m))
}

// fileKind names a file mode's type for error messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file (" + m.Type().String() + ")"
}
