// Package store holds a receiver's state in Pebble: the current row of every
// (table, key), the change log that feeds subscribers, each source's applied
// position and the stream cursor, all written together in atomic batches.
//
// The store has one writer (the consumer applying the stream, through Batch)
// and any number of readers. A transaction and the source position just past
// it are committed in the same Pebble batch, so after any crash the store
// holds exactly a prefix of the stream's frames, each applied once: whatever
// was lost is found again in the stream and re-applied, and whatever was kept
// is skipped by position.
//
// Sync policy: batches are committed without fsync (pebble.NoSync) unless
// WithSync(true). A process crash (kill -9) loses at most the commits Pebble
// had not yet handed to the kernel; a power loss at most those the kernel had
// not written back. Either way the WAL is replayed up to a batch boundary and
// positions travel with the data, so what survives is consistent and the rest
// is re-read from JetStream, which still holds it (the receiver never deletes
// from the stream). Change ids are assigned in stream order, so re-applying
// the lost tail reproduces the same ids.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options.
type options struct {
	cacheSize    int64
	memTableSize uint64
	sync         bool
	fs           vfs.FS
	log          *slog.Logger
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

// WithMemTableSize sets Pebble's memtable size in bytes (default 32 MiB; at
// most 4 are in memory while flushes catch up).
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
	db  *pebble.DB
	wo  *pebble.WriteOptions
	log *slog.Logger
	dir string

	mu          sync.Mutex
	positions   map[string]SourcePosition
	cursor      StreamCursor
	lastChange  uint64 // highest change id committed
	firstChange uint64 // lowest change id still in the log (lastChange+1 when empty)
	webhook     uint64
	notify      chan struct{}
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	o := options{cacheSize: 64 << 20, memTableSize: 32 << 20, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	cache := pebble.NewCache(o.cacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                o.memTableSize,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       1000,
		LBaseMaxBytes:               256 << 20,
		Logger:                      pebbleLogger{o.log},
		FormatMajorVersion:          pebble.FormatNewest,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 2 },
	}
	// Bloom filters: a GET of a key that is not in a table skips it
	// without reading a block.
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	// Flushes (L0) skip compression: L0 tables are rewritten by the next
	// compaction anyway, and snappy was ~9% of the apply CPU. Deeper levels
	// keep Snappy.
	po.Levels[0].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	po.Levels[1].Compression = func() *sstable.CompressionProfile { return sstable.SnappyCompression }
	if o.fs != nil {
		po.FS = o.fs
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("store: opening Pebble in %s: %w (is another receiver using this --data directory?)", dir, err)
	}
	s := &Store{db: db, log: o.log, dir: dir, wo: pebble.NoSync, positions: map[string]SourcePosition{}, notify: make(chan struct{})}
	if o.sync {
		s.wo = pebble.Sync
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
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
	s.firstChange = s.lastChange + 1
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixChange}, UpperBound: []byte{prefixChange + 1}})
	if err != nil {
		return fmt.Errorf("store: reading the change log: %w", err)
	}
	if it.First() {
		if id, ok := changeKeyID(it.Key()); ok {
			s.firstChange = id
		}
	}
	return it.Close()
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

// Close closes the store.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: closing Pebble: %w", err)
	}
	return nil
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
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("store: checkpoint to %s: %w", dir, err)
	}
	return nil
}

// Sync makes every commit so far durable.
func (s *Store) Sync() error {
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: syncing the WAL: %w", err)
	}
	return nil
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
