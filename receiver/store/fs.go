package store

import (
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
// renames, locks and everything else pass through.
type bufferedFS struct {
	vfs.FS
}

func (fs bufferedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil {
		return nil, err
	}
	return &bufferedFile{File: f}, nil
}

func (fs bufferedFS) Unwrap() vfs.FS { return fs.FS }

// bufferedFile buffers sequential writes. Every other operation that could
// observe the file (sync, stat, read, positional write, close) writes the
// buffer out first, so Pebble sees exactly the file it wrote; only the
// moment the bytes reach the kernel moves.
type bufferedFile struct {
	vfs.File
	buf []byte
	err error // sticky: a failed write loses bytes every later call must report
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
			n, err := f.File.Write(p)
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
	_, err := f.File.Write(f.buf)
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
