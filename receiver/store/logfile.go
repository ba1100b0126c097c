package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// The change log's entries live in append-only files next to Pebble, not in
// it: dir/changelog/<first change id, 20 digits>.log. Pebble holds only a
// small index record per entry (its file, offset and length), written in
// the same batch as the rows and positions of the entry's changes, so the
// index is exactly as durable as the rest of the store. Kept in Pebble, the
// log's bytes were flushed and then rewritten by every compaction of the
// rows they were mixed with: moving them out cut the settled apply CPU by
// 15–19% (BenchmarkApply).
//
// A file is a sequence of records:
//
//	| crc32c u32 (of the rest of the record) | entry length u32 |
//	| first change id u64 | entry (changelog.go) |
//
// Integers are little endian. Records are only ever appended; a file holds
// the records of consecutive commits and takes no new commit once it holds
// WithLogFileSize bytes (a commit's records never straddle two files).
//
// Durability follows the index: an entry is written to its file before the
// Pebble commit that indexes it, and the files are fsynced before that
// commit can become durable: before every commit with WithSync(true), else
// whenever Pebble flushes a memtable (the only way a commit becomes durable
// without a WAL), from the TableCreated listener Open installs, which Pebble
// calls before it writes a flush's first table. So after any crash every
// index record points at bytes that are there. Bytes a crash left past the
// last index record (written, their commit lost) are never read; the store
// appends to a new file after every open.
const (
	logRecordHeader = 16
	logDirName      = "changelog"
	// maxEntryLen bounds an entry: a message body (at most wire.MaxRawLen,
	// even uncompressed) or ~maxEntryRaw of s2-compressed frames, plus the
	// header and frame offsets. A reader never allocates more for one.
	maxEntryLen = wire.MaxRawLen + 1<<20
	// rebuildHint says what to do about a damaged change log.
	rebuildHint = "rebuild this receiver (--rebuild, or from a checkpoint)"
)

// indexRecord is the value of a change log key in Pebble (version 2; version
// 1 values are the entries themselves, kept inline by older stores):
//
//	| version u8 = 2 | file u64 | offset u64 | entry length u32 |
//	| changes u32 | applied i64 |
type indexRecord struct {
	file    uint64 // the file's name: the first change id it holds
	off     int64  // of the record in the file
	length  uint32 // of the entry
	changes uint32
	applied int64
}

const indexVersion = 2

func appendIndex(dst []byte, r *indexRecord) []byte {
	dst = append(dst, indexVersion)
	dst = binary.LittleEndian.AppendUint64(dst, r.file)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.off))
	dst = binary.LittleEndian.AppendUint32(dst, r.length)
	dst = binary.LittleEndian.AppendUint32(dst, r.changes)
	return binary.LittleEndian.AppendUint64(dst, uint64(r.applied))
}

func decodeIndex(first uint64, b []byte) (indexRecord, error) {
	r := reader{b: b}
	if v := r.u8(); v != indexVersion && r.err == nil {
		return indexRecord{}, fmt.Errorf("store: change log index %d: unknown record version %d", first, v)
	}
	x := indexRecord{file: r.u64(), off: int64(r.u64()), length: r.u32(), changes: r.u32(), applied: int64(r.u64())}
	if r.err != nil {
		return indexRecord{}, fmt.Errorf("store: change log index %d: %w", first, r.err)
	}
	if x.file > first || x.off < 0 || x.length > maxEntryLen {
		return indexRecord{}, fmt.Errorf("store: change log index %d: points at %d bytes of file %d offset %d", first, x.length, x.file, x.off)
	}
	return x, nil
}

// appendLogRecord appends the record of entry e (encoded by appendEntry).
func appendLogRecord(dst []byte, e *logEntry) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, logRecordHeader)...)
	dst = appendEntry(dst, e)
	rec := dst[start:]
	binary.LittleEndian.PutUint32(rec[4:], uint32(len(rec)-logRecordHeader))
	binary.LittleEndian.PutUint64(rec[8:], e.first)
	binary.LittleEndian.PutUint32(rec[0:], format.Checksum(rec[4:]))
	return dst
}

// ErrLogCorrupt means a change log file does not hold what the store's index
// says it does.
var ErrLogCorrupt = errors.New("store: change log corrupt")

func logFileName(id uint64) string { return fmt.Sprintf("%020d.log", id) }

func parseLogFileName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".log")
	if !ok || len(s) != 20 {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 64)
	return id, err == nil
}

// logFiles are the change log's files: one writer (the commit goroutine),
// a syncer (Pebble's flushes, or the writer itself with WithSync), readers.
type logFiles struct {
	fs       vfs.FS
	dir      string
	fileSize int64 // a file takes no new write once this big

	mu       sync.Mutex
	files    []uint64 // every file, oldest first; the last one is cur once open
	cur      vfs.File // being appended to (nil: none yet since open)
	size     int64    // of cur
	curDirty bool     // cur has unsynced writes
	rotated  []vfs.File
	dirDirty bool // a file was created since the last sync
	err      error
	sp       *space // full-disk tracking (nil: none)

	syncMu sync.Mutex // one sync at a time
}

// openLogFiles opens the change log's files, given the first file the index
// reaches and its last record (nil if the index holds no file record).
// Files the index does not reach (trimmed, or written by commits a crash
// lost) are removed; the file of the last record must hold it.
func openLogFiles(fsys vfs.FS, dir string, fileSize int64, minFile uint64, last *indexRecord, sp *space) (*logFiles, error) {
	l := &logFiles{fs: fsys, dir: fsys.PathJoin(dir, logDirName), fileSize: fileSize, sp: sp}
	if err := fsys.MkdirAll(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: creating the change log directory: %w", err)
	}
	// The directory's own entry must be durable before any file in it is.
	if err := syncDir(fsys, dir); err != nil {
		return nil, fmt.Errorf("store: creating the change log directory: %w", err)
	}
	names, err := fsys.List(l.dir)
	if err != nil {
		return nil, fmt.Errorf("store: listing the change log directory %s: %w", l.dir, err)
	}
	for _, name := range names {
		id, ok := parseLogFileName(name)
		if !ok {
			continue
		}
		if last == nil || id < minFile || id > last.file {
			if err := fsys.Remove(fsys.PathJoin(l.dir, name)); err != nil {
				return nil, fmt.Errorf("store: removing change log file %s, which the index no longer reaches: %w", name, err)
			}
			continue
		}
		l.files = append(l.files, id)
	}
	slices.Sort(l.files)
	if last != nil {
		path := l.path(last.file)
		fi, err := fsys.Stat(path)
		end := last.off + logRecordHeader + int64(last.length)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: %s, which holds the last change log entry, is missing (%v): %s", ErrLogCorrupt, path, err, rebuildHint)
		case fi.Size() < end:
			return nil, fmt.Errorf("%w: %s ends at byte %d, but the last change log entry ends at %d: the file lost data (a disk that ignored fsync?); %s", ErrLogCorrupt, path, fi.Size(), end, rebuildHint)
		}
	}
	return l, nil
}

func (l *logFiles) path(id uint64) string { return l.fs.PathJoin(l.dir, logFileName(id)) }

// next returns where the next write lands: a file and an offset in it. It
// opens a new file, named first, when none is open since the store opened or
// the current one is full.
func (l *logFiles) next(first uint64) (file uint64, off int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, 0, l.err
	}
	if l.cur != nil && l.size < l.fileSize {
		return l.files[len(l.files)-1], l.size, nil
	}
	if n := len(l.files); n > 0 && first <= l.files[n-1] {
		// Change ids only grow: this would overwrite a file the index uses.
		return 0, 0, fmt.Errorf("store: change log file %s already exists (new entry %d)", l.path(l.files[n-1]), first)
	}
	f, err := l.fs.Create(l.path(first), vfs.WriteCategoryUnspecified)
	if err != nil {
		return 0, 0, fmt.Errorf("store: creating change log file %s: %w", l.path(first), err)
	}
	if l.cur != nil {
		l.rotated = append(l.rotated, l.cur)
	}
	l.cur, l.size, l.dirDirty = f, 0, true
	l.files = append(l.files, first)
	return first, 0, nil
}

// write appends b to the current file, at the offset next returned. It
// writes at that offset, not at the file's: a write the disk could only
// take part of (full) is overwritten by the next one, so a full disk leaves
// the log as it was and a commit can be tried again once space returns.
// With a space tracker, DiskReserve is left free.
func (l *logFiles) write(b []byte) error {
	l.mu.Lock()
	f, err, off := l.cur, l.err, l.size
	l.mu.Unlock()
	if err != nil {
		return err
	}
	name := l.path(l.files[len(l.files)-1])
	if l.sp != nil {
		if err := l.sp.reserve(name, len(b)); err != nil {
			return l.sp.note(&l.sp.commit, fmt.Errorf("store: appending to the change log: %w", err))
		}
	}
	// Only this goroutine writes and rotates, so f stays current.
	if _, err := f.WriteAt(b, off); err != nil {
		err = fmt.Errorf("store: appending to the change log %s at offset %d: %w", name, off, err)
		if IsDiskFull(err) && l.sp != nil {
			return l.sp.note(&l.sp.commit, err)
		}
		l.mu.Lock()
		l.err = err // not a full disk: give up on the log
		l.mu.Unlock()
		return err
	}
	l.mu.Lock()
	l.size += int64(len(b))
	l.curDirty = true
	l.mu.Unlock()
	return nil
}

// sync makes every write so far durable (files and directory entries). It
// is safe to call concurrently with write.
func (l *logFiles) sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	rotated, cur, curDirty, dirDirty := l.rotated, l.cur, l.curDirty, l.dirDirty
	l.rotated, l.curDirty, l.dirDirty = nil, false, false
	l.mu.Unlock()
	err := func() error {
		for i, f := range rotated {
			if err := f.Sync(); err != nil {
				rotated = rotated[i:]
				return err
			}
			f.Close()
		}
		rotated = nil
		if curDirty && cur != nil {
			if err := cur.Sync(); err != nil {
				return err
			}
			curDirty = false
		}
		if dirDirty {
			if err := syncDir(l.fs, l.dir); err != nil {
				return err
			}
			dirDirty = false
		}
		return nil
	}()
	if err != nil {
		l.mu.Lock()
		l.rotated = append(rotated, l.rotated...)
		l.curDirty = l.curDirty || curDirty
		l.dirDirty = l.dirDirty || dirDirty
		l.mu.Unlock()
		return fmt.Errorf("store: syncing the change log in %s: %w", l.dir, err)
	}
	return nil
}

// fail makes every later write fail with err.
func (l *logFiles) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

// removeBefore removes the files that hold only changes below cut, never
// the one being written. The caller made the index's trim durable first.
func (l *logFiles) removeBefore(cut uint64) error {
	l.mu.Lock()
	n := 0
	for n+1 < len(l.files) && l.files[n+1] <= cut {
		n++
	}
	doomed := slices.Clone(l.files[:n])
	l.files = l.files[n:]
	l.mu.Unlock()
	for _, id := range doomed {
		if err := l.fs.Remove(l.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store: removing trimmed change log file %s: %w", l.path(id), err)
		}
	}
	return nil
}

// usage returns the number of files and the bytes they hold.
func (l *logFiles) usage() (files int, bytes int64) {
	l.mu.Lock()
	ids := slices.Clone(l.files)
	l.mu.Unlock()
	for _, id := range ids {
		if fi, err := l.fs.Stat(l.path(id)); err == nil {
			files++
			bytes += fi.Size()
		}
	}
	return files, bytes
}

// removable reports whether removeBefore(cut) would remove a file.
func (l *logFiles) removable(cut uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.files) > 1 && l.files[1] <= cut
}

// copyTo copies the files to dir's change log directory (for a
// checkpoint): the closed ones as hard links where the file system allows,
// the one being written as a copy of what it holds now.
func (l *logFiles) copyTo(dir string) error {
	dst := l.fs.PathJoin(dir, logDirName)
	if err := l.fs.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("store: creating %s: %w", dst, err)
	}
	l.mu.Lock()
	files := slices.Clone(l.files)
	open := l.cur != nil
	size := l.size
	l.mu.Unlock()
	for i, id := range files {
		src, to := l.path(id), l.fs.PathJoin(dst, logFileName(id))
		n := int64(-1) // whole file
		if open && i == len(files)-1 {
			n = size
		} else if err := l.fs.Link(src, to); err == nil {
			continue
		}
		if err := copyFile(l.fs, src, to, n); err != nil {
			return err
		}
	}
	if err := syncDir(l.fs, dst); err != nil {
		return err
	}
	return syncDir(l.fs, dir)
}

func syncDir(fsys vfs.FS, dir string) error {
	d, err := fsys.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("store: syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: syncing directory %s: %w", dir, err)
	}
	return nil
}

func copyFile(fsys vfs.FS, src, dst string, n int64) error {
	in, err := fsys.Open(src)
	if err != nil {
		return fmt.Errorf("store: copying %s: %w", src, err)
	}
	defer in.Close()
	out, err := fsys.Create(dst, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("store: copying %s to %s: %w", src, dst, err)
	}
	var r io.Reader = in
	if n >= 0 {
		r = io.LimitReader(in, n)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("store: copying %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("store: syncing %s: %w", dst, err)
	}
	return out.Close()
}

// close syncs and closes the files.
func (l *logFiles) close() error {
	err := l.sync()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil {
		if cerr := l.cur.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("store: closing the change log: %w", cerr)
		}
		l.cur = nil
	}
	for _, f := range l.rotated {
		f.Close()
	}
	l.rotated = nil
	if l.err == nil {
		l.err = errors.New("store: closed")
	}
	return err
}

// logReader reads entries, keeping the last file it read open: a page of the
// feed reads consecutive entries of one file.
type logReader struct {
	l   *logFiles
	id  uint64
	f   vfs.File
	buf []byte
}

// entry returns the entry that x indexes (first being its first change id),
// checked against its record's CRC. The bytes are valid until the next call.
func (r *logReader) entry(first uint64, x *indexRecord) ([]byte, error) {
	if r.f == nil || r.id != x.file {
		r.close()
		f, err := r.l.fs.Open(r.l.path(x.file))
		if err != nil {
			return nil, fmt.Errorf("store: opening change log file for entry %d: %w", first, err)
		}
		r.f, r.id = f, x.file
	}
	n := logRecordHeader + int(x.length)
	r.buf = slices.Grow(r.buf[:0], n)[:n]
	if _, err := r.f.ReadAt(r.buf, x.off); err != nil {
		return nil, fmt.Errorf("%w: reading entry %d at %s offset %d: %v; the rows are intact, only the change feed is affected: %s", ErrLogCorrupt, first, r.l.path(x.file), x.off, err, rebuildHint)
	}
	rec := r.buf
	switch {
	case binary.LittleEndian.Uint32(rec[0:]) != format.Checksum(rec[4:]):
		return nil, fmt.Errorf("%w: entry %d at %s offset %d: checksum mismatch; the rows are intact, only the change feed is affected: %s", ErrLogCorrupt, first, r.l.path(x.file), x.off, rebuildHint)
	case binary.LittleEndian.Uint32(rec[4:]) != x.length || binary.LittleEndian.Uint64(rec[8:]) != first:
		return nil, fmt.Errorf("%w: entry %d at %s offset %d: the record holds entry %d of %d bytes, the index says %d bytes; %s", ErrLogCorrupt,
			first, r.l.path(x.file), x.off, binary.LittleEndian.Uint64(rec[8:]), binary.LittleEndian.Uint32(rec[4:]), x.length, rebuildHint)
	}
	return rec[logRecordHeader:], nil
}

func (r *logReader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}
