package store

import (
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeBufferSize is how much a file Pebble creates gathers before one
// write(2). Pebble writes its files through a 4 KiB bufio.Writer, one system
// call per 4 KiB data block; on the 2-core VM the receiver is measured on a
// write(2) costs ~2.4 µs whatever its size below 64 KiB, and writing 4 KiB at
// a time took twice the CPU of 64 KiB at a time (0.64 vs 0.32 s per GiB).
// While catching up, the receiver writes ~300 bytes per applied change
// (flushes and compactions): a quarter of its CPU went to write(2) calls.
// RocksDB buffers 1 MiB per file for the same reason
// (writable_file_max_buffer_size).
const writeBufferSize = 256 << 10

// bufferedFS gives every file Pebble creates a larger write buffer. Reads,
// renames, locks and everything else pass through. With a space tracker
// (diskfull.go), a write that finds the disk full waits a moment before
// failing (Pebble retries a failed flush at once), and tables leave
// DiskReserve free.
type bufferedFS struct {
	vfs.FS
	sp *space
}

func (fs bufferedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil {
		return nil, fs.wait(err)
	}
	bf := &bufferedFile{File: f, name: name, sp: fs.sp}
	// Tables and blob files are what a full disk refuses first: the
	// MANIFEST must still fit.
	bf.reserve = fs.sp != nil && (strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob"))
	return bf, nil
}

// wait pauses a moment before returning a full-disk error.
func (fs bufferedFS) wait(err error) error {
	if fs.sp != nil && IsDiskFull(err) {
		time.Sleep(fs.sp.retry)
	}
	return err
}

func (fs bufferedFS) Unwrap() vfs.FS { return fs.FS }

// bufferedFile buffers sequential writes. Every other operation that could
// observe the file (sync, stat, read, positional write, close) writes the
// buffer out first, so Pebble sees exactly the file it wrote; only the
// moment the bytes reach the kernel moves.
type bufferedFile struct {
	vfs.File
	buf     []byte
	err     error // sticky: a failed write loses bytes every later call must report
	name    string
	sp      *space
	reserve bool // leave DiskReserve free
}

// write writes p to the file, after the reserve check.
func (f *bufferedFile) write(p []byte) (int, error) {
	if f.reserve {
		if err := f.sp.reserve(f.name, len(p)); err != nil {
			time.Sleep(f.sp.retry)
			return 0, err
		}
	}
	n, err := f.File.Write(p)
	if err != nil && f.sp != nil && IsDiskFull(err) {
		// Not a table (its MANIFEST, mostly, whose failure Pebble treats as
		// fatal): the ballast makes room, once.
		if !f.reserve && f.sp.release() {
			m, err := f.File.Write(p[n:])
			return n + m, err
		}
		time.Sleep(f.sp.retry)
	}
	return n, err
}

func (f *bufferedFile) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if len(f.buf)+len(p) > writeBufferSize {
		if err := f.flush(); err != nil {
			return 0, err
		}
		if len(p) >= writeBufferSize {
			n, err := f.write(p)
			if err != nil {
				f.err = err
			}
			return n, err
		}
	}
	if f.buf == nil {
		f.buf = make([]byte, 0, writeBufferSize)
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

func (f *bufferedFile) flush() error {
	if f.err != nil {
		return f.err
	}
	if len(f.buf) == 0 {
		return nil
	}
	_, err := f.write(f.buf)
	f.buf = f.buf[:0]
	if err != nil {
		f.err = err
	}
	return err
}

func (f *bufferedFile) Close() error {
	ferr := f.flush()
	f.buf = nil
	if err := f.File.Close(); err != nil {
		return err
	}
	return ferr
}

func (f *bufferedFile) Sync() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *bufferedFile) SyncData() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f *bufferedFile) SyncTo(length int64) (bool, error) {
	if err := f.flush(); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}

func (f *bufferedFile) Stat() (vfs.FileInfo, error) {
	if err := f.flush(); err != nil {
		return nil, err
	}
	return f.File.Stat()
}

func (f *bufferedFile) Read(p []byte) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *bufferedFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *bufferedFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}
