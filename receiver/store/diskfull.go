package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A full disk. Without a write-ahead log (the default) a commit writes only
// the change log's files; Pebble writes its tables later, in background
// flushes, and retries a failed flush at once and for ever, while commits
// stall once two memtables wait for it. A receiver whose disk filled used
// to stop on the failed commit, close its listener and then hang in Close,
// flushing into the full disk, deaf to SIGTERM. Now:
//
//   - a commit is refused, with an error IsDiskFull recognises, when the
//     file system has less than the headroom free (DiskReserve plus two
//     memtables: what the flushes it may wait for write), or when a flush
//     failed for want of space and none has succeeded since: it never
//     stalls in Pebble waiting for a flush that cannot happen;
//   - a change log write that finds no space fails the same way and leaves
//     the log as it was (the log is written at its known end: torn bytes
//     are overwritten by the next write);
//   - after either, the batch is dropped and the store is as it was: the
//     consumer waits for space (SpaceAvailable) and re-reads the stream
//     from the store's cursor; reads are served throughout;
//   - a flush that finds no space is noted (DiskFull) and retried by Pebble
//     about once a second (the file system wrapper waits before reporting
//     the error), not in a busy loop;
//   - tables and change log files leave DiskReserve bytes free, and the
//     store keeps a ballast file of DiskReserve bytes (ballastName) that it
//     removes when any other of Pebble's files (its MANIFEST) finds no
//     space, then writes again: Pebble treats a failed MANIFEST write as
//     fatal (it panicked the receiver, at every restart on the full disk),
//     and its few kilobytes must fit even when another program filled the
//     disk to the last byte. The ballast is made again once space returns;
//   - Close gives up the final flush when it finds the disk full (what is
//     lost is re-read from the stream at the next start, as after a crash)
//     instead of waiting for it.

// DiskReserve is what the store's tables and change log leave free on their
// file system: room for Pebble's MANIFEST records, whose failure Pebble
// treats as fatal.
const DiskReserve = 4 << 20

// ballastName is the ballast file in the store's directory: DiskReserve
// bytes allocated while there is space, removed when Pebble's MANIFEST
// finds none.
const ballastName = "FERRY-BALLAST"

// fullRetry is how long a write that found the disk full waits before
// reporting it: Pebble retries a failed flush at once, and without a pause
// it would spin a core and flood the log.
const fullRetry = time.Second

// IsDiskFull reports whether err is a write that found no space (ENOSPC, or
// a quota: EDQUOT).
func IsDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// DiskFullError is what the store knows of a full disk: the first error
// and when it began.
type DiskFullError struct {
	Err   error
	Since time.Time
	Dir   string
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("store: the disk of %s is full since %s (%v): applying is paused until space returns; free space on that file system (the receiver's --data)",
		e.Dir, e.Since.UTC().Format(time.RFC3339), e.Err)
}

func (e *DiskFullError) Unwrap() error { return e.Err }

// space tracks full-disk conditions of one store: Pebble's flushes (set
// when one fails for want of space, cleared by the next that succeeds) and
// commits (set when one is refused or its change log write finds no space,
// cleared by the next that succeeds).
type space struct {
	fs       vfs.FS
	dir      string
	headroom uint64                          // free bytes a commit needs
	free     func(dir string) (uint64, bool) // bytes available; false: not known
	retry    time.Duration
	flush    atomic.Pointer[DiskFullError]
	commit   atomic.Pointer[DiskFullError]

	ballastMu sync.Mutex
	ballast   bool // the ballast file is there
	log       *slog.Logger
}

func newSpace(fs vfs.FS, dir string, memTable uint64, log *slog.Logger) *space {
	sp := &space{fs: fs, dir: dir, headroom: DiskReserve + 2*memTable, free: diskFree, retry: fullRetry, log: log}
	_, err := fs.Stat(sp.ballastPath())
	sp.ballast = err == nil
	return sp
}

func (sp *space) ballastPath() string { return sp.fs.PathJoin(sp.dir, ballastName) }

// release removes the ballast, and reports whether that freed space.
func (sp *space) release() bool {
	sp.ballastMu.Lock()
	defer sp.ballastMu.Unlock()
	if !sp.ballast {
		return false
	}
	if err := sp.fs.Remove(sp.ballastPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		sp.log.Error("store: the disk is full and the ballast file could not be removed", "path", sp.ballastPath(), "err", err)
		return false
	}
	sp.ballast = false
	sp.log.Warn("store: the disk is full: the ballast file was removed to make room for Pebble's MANIFEST", "path", sp.ballastPath(), "bytes", DiskReserve)
	return true
}

// restore allocates the ballast again if the file system has room for it
// beyond the headroom (and its free space can be measured at all).
func (sp *space) restore() {
	sp.ballastMu.Lock()
	defer sp.ballastMu.Unlock()
	if sp.ballast {
		return
	}
	if free, ok := sp.free(sp.dir); !ok || free < sp.headroom+DiskReserve {
		return
	}
	path := sp.ballastPath()
	err := func() error {
		f, err := sp.fs.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Preallocate(0, DiskReserve); err != nil {
			// No fallocate here: write the bytes.
			zero := make([]byte, 64<<10)
			for n := 0; n < DiskReserve; n += len(zero) {
				if _, err := f.Write(zero); err != nil {
					return err
				}
			}
		}
		return f.Sync()
	}()
	if err != nil {
		sp.fs.Remove(path)
		sp.log.Warn("store: could not allocate the ballast file", "path", path, "err", err)
		return
	}
	sp.ballast = true
}

// note records err if it is a full disk, in p, after waiting (see
// fullRetry); it returns err.
func (sp *space) note(p *atomic.Pointer[DiskFullError], err error) error {
	if err == nil || !IsDiskFull(err) {
		return err
	}
	if p.Load() == nil {
		p.CompareAndSwap(nil, &DiskFullError{Err: err, Since: time.Now(), Dir: sp.dir})
	}
	time.Sleep(sp.retry)
	return err
}

// reserve returns a full-disk error if writing n more bytes would leave
// less than DiskReserve free.
func (sp *space) reserve(name string, n int) error {
	free, ok := sp.free(sp.dir)
	if !ok || free >= uint64(n)+DiskReserve {
		return nil
	}
	return fmt.Errorf("writing %d bytes to %s would leave less than the %d MiB the store keeps free for Pebble's MANIFEST (%d bytes free): %w",
		n, name, DiskReserve>>20, free, syscall.ENOSPC)
}

// check returns the reason a commit must not be tried now, if any: a
// flush failing for want of space, or less than the headroom free.
func (sp *space) check() error {
	if e := sp.flush.Load(); e != nil {
		return e
	}
	free, ok := sp.free(sp.dir)
	if !ok || free >= sp.headroom {
		return nil
	}
	err := fmt.Errorf("store: %d MiB free on the file system of %s, and a commit needs %d MiB (what its flushes write, and %d MiB kept free): %w",
		free>>20, sp.dir, sp.headroom>>20, DiskReserve>>20, syscall.ENOSPC)
	sp.commit.CompareAndSwap(nil, &DiskFullError{Err: err, Since: time.Now(), Dir: sp.dir})
	return err
}

// full returns the condition under way, the flushes' first.
func (sp *space) full() *DiskFullError {
	if e := sp.flush.Load(); e != nil {
		return e
	}
	return sp.commit.Load()
}

// DiskFull returns the full-disk condition under way (nil: none): a flush
// or a commit failed for want of space, and none has succeeded since.
func (s *Store) DiskFull() *DiskFullError { return s.space.full() }

// SpaceAvailable reports whether a commit is worth trying again after a
// full disk: no flush is failing for want of space and the file system has
// the headroom a commit needs (where that can be measured).
func (s *Store) SpaceAvailable() bool {
	if s.space.flush.Load() != nil {
		return false
	}
	free, ok := s.space.free(s.dir)
	if ok && free < s.space.headroom {
		return false
	}
	s.space.restore()
	return true
}
