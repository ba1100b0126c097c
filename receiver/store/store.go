// Package store holds a receiver's state: in Pebble, the current row of every
// (table, key), each source's applied position, the stream cursor and the
// index of the change log that feeds subscribers, all written together in
// atomic batches; the change log's entries in append-only files beside it.
//
// The store has one writer (the consumer applying the stream, through Batch)
// and any number of readers. A transaction and the source position just past
// it are committed in the same Pebble batch, so after any crash the store
// holds exactly a prefix of the stream's frames, each applied once: whatever
// was lost is found again in the stream and re-applied, and whatever was kept
// is skipped by position.
//
// Sync policy: by default the store runs without a write-ahead log
// (pebble.Options.DisableWAL) and nothing is fsynced on commit; WithSync(true)
// turns the WAL back on and fsyncs every commit. Without a WAL, what survives
// a crash (kill -9 or power loss) is exactly what Pebble flushed to sstables,
// and that is always a prefix of the committed batches:
//
//   - a batch is applied to one memtable only (Pebble makes room for the whole
//     batch before applying it; a batch too large for a memtable becomes a
//     flushable of its own in the memtable queue), and a memtable is flushed
//     only once every batch applied to it is complete (readyForFlush);
//   - flushes take the memtable queue in order, a prefix of it at a time,
//     and each flush is recorded in the MANIFEST (synced) atomically;
//   - a transaction's rows, change log index record, its source's position,
//     the last change id and the stream cursor are in the same batch;
//   - the change log's files (logfile.go) are written before the commit that
//     indexes them and fsynced before any flush writes its first table, so
//     a durable index record always points at durable bytes.
//
// So after any crash every source's position still matches its data, and
// whatever was lost is re-read from JetStream, which still holds it (the
// receiver never deletes from the stream), and re-applied with the same
// change ids (they are assigned in stream order). The WAL would only narrow
// what is re-read; with fsync off (NoSync) it did not make anything durable
// anyway, and writing it cost ~15% of the CPU per applied change. To bound what a
// crash makes the receiver re-read, the store flushes its memtable every
// flush interval (default 5 s, WithFlushInterval) when something was
// committed since the last flush, and Close flushes everything: a clean
// restart re-reads nothing. A kill -9 therefore loses about the last flush
// interval of commits plus the memtables still being flushed; a power loss
// with a WAL and NoSync lost up to the kernel's writeback delay (~30 s).
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format/wire"
)

// Options.
type options struct {
	cacheSize    int64
	memTableSize uint64
	sync         bool
	flushEvery   time.Duration
	logFileSize  int64
	fs           vfs.FS
	log          *slog.Logger
	discard      bool
	noBulk       bool
	rowKeys      rowKeys // tests: create the store with this encoding (keys.go)

	tombRetention time.Duration
	cmdRetention  time.Duration
}

// Option configures a Store.
type Option func(*options) error

// WithCacheSize sets Pebble's block cache size in bytes (default 64 MiB).
func WithCacheSize(n int64) Option {
	return func(o *options) error {
		if n < 1<<20 {
			return fmt.Errorf("store: cache size %d below 1 MiB", n)
		}
		o.cacheSize = n
		return nil
	}
}

// WithMemTableSize sets Pebble's memtable size in bytes (default 64 MiB; at
// most 2 are in memory while flushes catch up, and Pebble counts them
// against the block cache).
func WithMemTableSize(n uint64) Option {
	return func(o *options) error {
		if n < 1<<20 || n > 4<<30 {
			return fmt.Errorf("store: memtable size %d outside 1 MiB..4 GiB", n)
		}
		o.memTableSize = n
		return nil
	}
}

// WithSync makes every commit wait for an fsync. Not needed for exactly-once
// (see the package doc); it narrows what a power loss makes the receiver
// re-read from the stream.
func WithSync(sync bool) Option {
	return func(o *options) error { o.sync = sync; return nil }
}

// WithFlushInterval sets how often the store flushes its memtable when
// something was committed since the last flush (default 5 s): the most a
// kill -9 makes the receiver re-read from the stream, beyond the memtables
// being flushed (see the package doc). Ignored with WithSync(true), which
// keeps a write-ahead log instead.
func WithFlushInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("store: flush interval %v must be positive", d)
		}
		o.flushEvery = d
		return nil
	}
}

// WithLogFileSize sets the size at which the change log starts a new file
// (default 64 MiB). Trimming removes whole files, so the log keeps up to this
// much beyond what its retention asks.
func WithLogFileSize(n int64) Option {
	return func(o *options) error {
		if n < 1<<10 || n > 1<<32 {
			return fmt.Errorf("store: change log file size %d outside 1 KiB..4 GiB", n)
		}
		o.logFileSize = n
		return nil
	}
}

// WithFS runs the store on another file system (vfs.NewMem() in tests).
func WithFS(fs vfs.FS) Option {
	return func(o *options) error {
		if fs == nil {
			return errors.New("store: nil file system")
		}
		o.fs = fs
		return nil
	}
}

// WithDiscard makes Open discard everything the directory holds (rows,
// positions, change log) and start empty, for a rebuild. It does so only
// once it holds the directory's lock: a store in use by another process is
// refused, never deleted under it.
func WithDiscard() Option {
	return func(o *options) error { o.discard = true; return nil }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("store: nil logger")
		}
		o.log = l
		return nil
	}
}

// Store is a receiver's Pebble store. Its methods are safe for concurrent
// use, except that only one Batch may be open at a time.
type Store struct {
	db     *pebble.DB
	rk     rowKeys // how row keys are encoded (keys.go)
	wo     *pebble.WriteOptions
	log    *slog.Logger
	dir    string
	fs     vfs.FS
	logs   *logFiles // the change log's files (logfile.go)
	lock   *pebble.Lock
	dec    *wire.Decompressor
	trimMu sync.Mutex // trims and checkpoints, one at a time

	logFileSize int64

	mu          sync.Mutex
	positions   map[string]SourcePosition
	cursor      StreamCursor
	lastChange  uint64 // highest change id committed
	firstChange uint64 // lowest change id still in the log (lastChange+1 when empty)
	webhook     uint64
	notify      chan struct{}

	// Without a WAL (the default): commits since the last flush, and the
	// flusher goroutine, stopped by Close.
	noWAL     bool
	dirty     atomic.Bool
	stopFlush chan struct{}
	flushDone chan struct{}
	closeOnce sync.Once

	tombRetention time.Duration
	cmdRetention  time.Duration // cmdretention.go
	cmdPurgedN    atomic.Uint64
	// Loads (loads.go): their states, under mu; whether chunks may be
	// ingested as sstables (ingest.go), Pebble's options for writing them
	// and the number of the last temporary table.
	loads     map[string]LoadState
	bulkLoad  bool
	po        *pebble.Options
	ingestSeq uint64
	// Row guard counters (GuardStats), since open but for tombstones
	// (counted from the index at open).
	stale, cross atomic.Uint64
	tombstones   atomic.Int64

	cmdMu       sync.Mutex    // command submissions, one check-and-set at a time
	dupOutcomes atomic.Uint64 // second outcomes of a command (commands.go)
	cmds        cmdTrack      // this receiver's commands until their outcome (commands.go)

	// Outcome counters (OutcomeStats); parked transactions per source,
	// under mu (counted from Pebble at open).
	outCommitted, outAborted, outUnmatched atomic.Uint64
	parked                                 map[string]int64

	// The sources that have written each table (tables.go), under mu;
	// seedWriters are added to every table of a store older than these
	// records.
	tables      map[string][]string
	seedWriters []string
	reads       atomic.Uint64 // row guard lookups
	tver        map[string]tableVer

	stallStart atomic.Int64 // Unix ns of the write stall under way (0: none)
	stalled    atomic.Int64 // ns of write stalls so far

	space *space // full-disk conditions (diskfull.go)
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	o := options{cacheSize: 64 << 20, memTableSize: 64 << 20, flushEvery: 5 * time.Second, logFileSize: 64 << 20, log: slog.New(slog.DiscardHandler),
		tombRetention: DefaultTombstoneRetention, cmdRetention: DefaultCommandRetention}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.fs == nil {
		o.fs = vfs.Default
	}
	lock, err := lockDir(o.fs, dir, o.discard)
	if err != nil {
		return nil, err
	}
	cache := pebble.NewCache(o.cacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:        cache,
		MemTableSize: o.memTableSize,
		// 64 MiB memtables: a consumer batch (8 MiB) goes into the
		// memtable instead of being queued as a flush of its own, and
		// fewer, bigger L0 tables cut flush and compaction work: ~17% less
		// CPU per applied change than 32 MiB (BenchmarkApply). At most 2
		// are held (one being flushed), as 4 of 32 MiB were before.
		MemTableStopWritesThreshold: 2,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       1000,
		LBaseMaxBytes:               256 << 20,
		Logger:                      pebbleLogger{o.log},
		FormatMajorVersion:          pebble.FormatNewest,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 2 },
		// No WAL unless every commit is fsynced: see the package doc.
		DisableWAL: !o.sync,
		Lock:       lock,
	}
	// Bloom filters: a GET of a key that is not in a table skips it
	// without reading a block.
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	// Flushes (L0) skip compression: L0 tables are rewritten by the next
	// compaction anyway, and snappy was ~9% of the apply CPU. Deeper levels
	// keep Snappy.
	po.Levels[0].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	po.Levels[1].Compression = func() *sstable.CompressionProfile { return sstable.SnappyCompression }
	// Write stalls (a full memtable waiting for its flush) are timed: a
	// receiver that falls behind because Pebble cannot keep up shows it.
	s := &Store{log: o.log, dir: dir, fs: o.fs, logFileSize: o.logFileSize, noWAL: !o.sync, positions: map[string]SourcePosition{}, notify: make(chan struct{}),
		tombRetention: o.tombRetention, cmdRetention: o.cmdRetention, parked: map[string]int64{}, tables: map[string][]string{}, tver: map[string]tableVer{},
		loads: map[string]LoadState{}, bulkLoad: !o.noBulk, po: po, space: newSpace(o.fs, dir, o.memTableSize, o.log)}
	po.EventListener = &pebble.EventListener{
		// A flush is what makes commits durable without a WAL: the change
		// log they index must be on disk first (logfile.go). Pebble calls
		// this before writing the flush's first table, without its mutex.
		TableCreated: func(info pebble.TableCreateInfo) {
			if info.Reason != "flushing" || !s.noWAL || s.logs == nil {
				return
			}
			if err := s.logs.sync(); err != nil {
				s.log.Error("store: the change log could not be synced before a flush; the store stops taking commits", "err", err)
				s.logs.fail(err)
			}
		},
		// A flush that finds the disk full is retried by Pebble; commits
		// are refused until one succeeds (diskfull.go).
		FlushEnd: func(info pebble.FlushInfo) {
			switch {
			case info.Err == nil:
				if e := s.space.flush.Swap(nil); e != nil {
					s.log.Info("store: a flush succeeded again: the disk has space", "dir", dir, "full_for", time.Since(e.Since).Round(time.Second).String())
				}
			case IsDiskFull(info.Err):
				if s.space.flush.CompareAndSwap(nil, &DiskFullError{Err: info.Err, Since: time.Now(), Dir: dir}) {
					s.log.Error("store: the disk is full: Pebble cannot flush its memtable; applying is paused, reads are still served; free space on this file system, the flush is retried every second",
						"dir", dir, "err", info.Err)
				}
			}
		},
		BackgroundError: func(err error) {
			if !IsDiskFull(err) { // full disks are reported once, above and by the consumer
				s.log.Error("store: Pebble background error", "err", err)
			}
		},
		WriteStallBegin: func(pebble.WriteStallBeginInfo) { s.stallStart.Store(time.Now().UnixNano()) },
		WriteStallEnd: func() {
			if t := s.stallStart.Swap(0); t != 0 {
				s.stalled.Add(time.Now().UnixNano() - t)
			}
		},
	}
	po.FS = bufferedFS{FS: o.fs, sp: s.space}
	dec, err := wire.NewDecompressor()
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.dec, s.lock = dec, lock
	db, err := pebble.Open(dir, po)
	if err != nil {
		dec.Close()
		lock.Close()
		return nil, fmt.Errorf("store: opening Pebble in %s: %w", dir, err)
	}
	s.db, s.wo = db, pebble.NoSync
	if o.sync {
		s.wo = pebble.Sync
	}
	if err := s.openRowKeys(o.rowKeys); err != nil {
		db.Close()
		dec.Close()
		lock.Close()
		return nil, err
	}
	if err := s.load(); err != nil {
		db.Close()
		dec.Close()
		lock.Close()
		return nil, err
	}
	s.space.restore()
	if s.noWAL {
		s.stopFlush, s.flushDone = make(chan struct{}), make(chan struct{})
		go s.flushLoop(o.flushEvery)
	}
	return s, nil
}

// lockDir takes dir's lock (Pebble's LOCK file, created with dir if
// needed), held until Close; with discard it then empties dir but for the
// lock. Locking first means a rebuild can never delete a store that another
// receiver is using.
func lockDir(fs vfs.FS, dir string, discard bool) (*pebble.Lock, error) {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: creating %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		return nil, fmt.Errorf("store: %s is in use (its lock is held: %w); is another receiver running on this --data directory? Stop it first", dir, err)
	}
	if !discard {
		return lock, nil
	}
	names, err := fs.List(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("store: listing %s to discard it: %w", dir, err)
	}
	for _, n := range names {
		if n == lockFile {
			continue
		}
		if err := fs.RemoveAll(fs.PathJoin(dir, n)); err != nil {
			lock.Close()
			return nil, fmt.Errorf("store: discarding %s: %w", fs.PathJoin(dir, n), err)
		}
	}
	return lock, nil
}

// lockFile is the name of Pebble's lock file in its directory.
const lockFile = "LOCK"

// flushLoop flushes the memtable every interval when something was
// committed since, until Close.
func (s *Store) flushLoop(every time.Duration) {
	defer close(s.flushDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopFlush:
			return
		case <-t.C:
			if !s.dirty.Swap(false) {
				continue
			}
			if _, err := s.db.AsyncFlush(); err != nil {
				s.dirty.Store(true)
				s.log.Warn("store: flushing the memtable failed; retrying at the next interval", "err", err)
			}
		}
	}
}

// committed notes a commit, for the flusher.
func (s *Store) committed() {
	if s.noWAL {
		s.dirty.Store(true)
	}
}

func (s *Store) load() error {
	if err := s.indexOutcomes(); err != nil {
		return err
	}
	if err := s.loadCommands(); err != nil {
		return err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPos}, UpperBound: []byte{prefixPos + 1}})
	if err != nil {
		return fmt.Errorf("store: reading positions: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		src := string(it.Key()[1:])
		p, err := decodePos(src, it.Value())
		if err != nil {
			it.Close()
			return err
		}
		s.positions[src] = p
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: reading positions: %w", err)
	}
	if v, ok, err := s.getMeta(keyLastChange); err != nil {
		return err
	} else if ok && len(v) == 8 {
		s.lastChange = leU64(v)
	}
	if v, ok, err := s.getMeta(keyWebhook); err != nil {
		return err
	} else if ok && len(v) == 8 {
		s.webhook = leU64(v)
	}
	if v, ok, err := s.getMeta(keyStream); err != nil {
		return err
	} else if ok {
		if s.cursor, err = decodeCursor(v); err != nil {
			return err
		}
	}
	if err := s.countTombstones(); err != nil {
		return err
	}
	if err := s.countParked(); err != nil {
		return err
	}
	if err := s.loadTableWriters(); err != nil {
		return err
	}
	if err := s.loadTableVersions(); err != nil {
		return err
	}
	if err := s.loadLoads(); err != nil {
		return err
	}
	if err := s.removeIngestLeftovers(); err != nil {
		return err
	}
	s.firstChange = s.lastChange + 1
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixChange}, UpperBound: []byte{prefixChange + 1}})
	if err != nil {
		return fmt.Errorf("store: reading the change log: %w", err)
	}
	defer it.Close()
	// The log files the index reaches: from the first entry's file (0 if
	// it is an inline entry of an older store) to the last entry's.
	var minFile uint64
	var last *indexRecord
	if it.First() {
		id, _ := changeKeyID(it.Key())
		s.firstChange = id
		if v := it.Value(); len(v) > 0 && v[0] == indexVersion {
			x, err := decodeIndex(id, v)
			if err != nil {
				return err
			}
			minFile = x.file
		}
		it.Last()
		id, _ = changeKeyID(it.Key())
		if v := it.Value(); len(v) > 0 && v[0] == indexVersion {
			x, err := decodeIndex(id, v)
			if err != nil {
				return err
			}
			last = &x
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: reading the change log: %w", err)
	}
	s.logs, err = openLogFiles(s.fs, s.dir, s.logFileSize, minFile, last, s.space)
	return err
}

func (s *Store) getMeta(k []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: reading %s: %w", k, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// Close flushes what is committed (without a WAL, the memtable is the only
// copy) and closes the store.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.noWAL {
			close(s.stopFlush)
			<-s.flushDone
			if ferr := s.closeFlush(); ferr != nil {
				err = fmt.Errorf("store: flushing before close (the unflushed tail will be re-read from the stream): %w", ferr)
			}
		}
		if cerr := s.logs.close(); cerr != nil && err == nil {
			err = cerr
		}
		if cerr := s.db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("store: closing Pebble: %w", cerr)
		}
		s.lock.Close()
		s.dec.Close()
	})
	return err
}

// closeFlush flushes the memtables, unless the disk is full: a flush that
// finds no space is retried by Pebble for ever, and Close must return
// (without a WAL, what is not flushed is re-read from the stream at the
// next start, as after a crash).
func (s *Store) closeFlush() error {
	done, err := s.db.AsyncFlush()
	if err != nil {
		return err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			if e := s.space.flush.Load(); e != nil {
				return e
			}
			return nil
		case <-t.C:
			if e := s.space.flush.Load(); e != nil {
				return e
			}
		}
	}
}

// Dir returns the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// Positions returns the applied position of every source, keyed by source.
func (s *Store) Positions() map[string]SourcePosition {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]SourcePosition, len(s.positions))
	for k, v := range s.positions {
		m[k] = v
	}
	return m
}

// Position returns the applied position of one source (zero if none).
func (s *Store) Position(source string) SourcePosition {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.positions[source]; ok {
		return p
	}
	return SourcePosition{Source: source}
}

// Cursor returns the stream cursor.
func (s *Store) Cursor() StreamCursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// ChangeRange returns the first and last change ids in the log; first > last
// when it is empty (last is then the highest id ever assigned).
func (s *Store) ChangeRange() (first, last uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstChange, s.lastChange
}

// Changed returns a channel closed at the next commit that adds changes or
// moves a position: wait on it, then call Changed again.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify
}

// Webhook returns the id of the last change delivered by the webhook.
func (s *Store) Webhook() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhook
}

// SetWebhook records that every change up to id was delivered.
func (s *Store) SetWebhook(id uint64) error {
	if err := s.db.Set(keyWebhook, leAppend(nil, id), s.wo); err != nil {
		return fmt.Errorf("store: recording webhook position %d: %w", id, err)
	}
	s.committed()
	s.mu.Lock()
	s.webhook = id
	s.mu.Unlock()
	return nil
}

// Checkpoint writes a consistent copy of the store to dir (which must not
// exist), for seeding another receiver: it holds rows, change log, positions
// and the stream cursor as of one commit, so a receiver opened on it catches
// up from there.
func (s *Store) Checkpoint(dir string) error {
	// A trim must not remove log files between the checkpoint of the index
	// and the copy of the files.
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	if s.noWAL {
		// Without a WAL the memtable's commits would be missing from the
		// checkpoint (still a consistent prefix, but behind).
		if err := s.db.Flush(); err != nil {
			return fmt.Errorf("store: flushing before the checkpoint to %s: %w", dir, err)
		}
	}
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("store: checkpoint to %s: %w", dir, err)
	}
	// The files hold at least what the checkpoint's index points at: every
	// entry is written before the commit that indexes it.
	if err := s.logs.copyTo(dir); err != nil {
		return fmt.Errorf("store: checkpoint to %s: %w", dir, err)
	}
	return nil
}

// Sync makes every commit so far durable: without a WAL by flushing the
// memtables (the flush syncs the change log, the sstables and the MANIFEST).
func (s *Store) Sync() error {
	if err := s.logs.sync(); err != nil {
		return err
	}
	if s.noWAL {
		if err := s.db.Flush(); err != nil {
			return fmt.Errorf("store: flushing the memtable: %w", err)
		}
		return nil
	}
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: syncing the WAL: %w", err)
	}
	return nil
}

// WriteStalled returns the time commits spent stalled by Pebble so far (a
// full memtable waiting for a flush).
func (s *Store) WriteStalled() time.Duration {
	d := s.stalled.Load()
	if t := s.stallStart.Load(); t != 0 {
		d += time.Now().UnixNano() - t
	}
	return time.Duration(d)
}

// Metrics returns Pebble's metrics.
func (s *Store) Metrics() *pebble.Metrics { return s.db.Metrics() }

func leU64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func leAppend(dst []byte, v uint64) []byte {
	return append(dst, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

// pebbleLogger sends Pebble's log lines to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...)) // Pebble's contract: Fatalf does not return
}
