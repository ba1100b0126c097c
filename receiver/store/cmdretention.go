package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Retention of command records. Every outcome record is indexed by when
// this store recorded it:
//
//	'k' 'x' + recorded at (Unix ns, u64 big endian) + id  ->  nothing
//
// written in the same batch as the outcome. Once older than the retention
// (WithCommandRetention) the entry, the outcome and the submitted record
// of the id go, up to purgeMax ids per commit like tombstones
// (tombstone.go): a backlog is purged over several commits, never in one
// that stalls. A pending command (submitted, no outcome) has no entry: it
// is never purged. A command submitted again after its records went is a
// new command to this store (the idempotency window is the retention); the
// legacy's own record of the id still keeps it from being carried out
// twice.
const (
	cmdIndex = 'x'
	// cmdIndexed marks a store whose outcome records (of an earlier
	// release, without index entries) were indexed at an open.
	cmdIndexed = 'i'
)

// DefaultCommandRetention is how long a command's records are kept after
// its outcome by default.
const DefaultCommandRetention = 7 * 24 * time.Hour

// WithCommandRetention sets how long a command's records (submitted and
// outcome) are kept after its outcome was recorded (default
// DefaultCommandRetention): within it a resubmission of the id is answered
// with the outcome, after it the id is new.
func WithCommandRetention(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("store: command retention %v must be positive", d)
		}
		o.cmdRetention = d
		return nil
	}
}

func appendCmdIndexKey(dst []byte, at int64, id string) []byte {
	dst = append(dst, prefixCommand, cmdIndex)
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	return append(dst, id...)
}

// indexOutcomes indexes, once, the outcome records of a store written
// before the index existed, as recorded now: they are purged one retention
// after the first open that knows the index.
func (s *Store) indexOutcomes() error {
	marker := []byte{prefixCommand, cmdIndexed}
	if _, done, err := s.getMeta(marker); err != nil || done {
		return err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCommand, cmdOutcome}, UpperBound: []byte{prefixCommand, cmdOutcome + 1}})
	if err != nil {
		return fmt.Errorf("store: indexing command outcomes: %w", err)
	}
	defer it.Close()
	now := time.Now().UnixNano()
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if err := b.Set(appendCmdIndexKey(nil, now, string(it.Key()[2:])), nil, nil); err != nil {
			return fmt.Errorf("store: indexing command outcomes: %w", err)
		}
		if n++; n%purgeMax == 0 {
			if err := b.Commit(s.wo); err != nil {
				return fmt.Errorf("store: indexing command outcomes: %w", err)
			}
			b.Close()
			b = s.db.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: indexing command outcomes: %w", err)
	}
	if err := b.Set(marker, nil, nil); err != nil {
		return err
	}
	if err := b.Commit(s.wo); err != nil {
		return fmt.Errorf("store: indexing command outcomes: %w", err)
	}
	return nil
}

// purgeCommands adds to the (empty) work being filled the purge of up to
// purgeMax commands whose outcome was recorded before now minus the
// retention.
func (b *Batch) purgeCommands(now time.Time) error {
	if now.Sub(b.cmdPurged) < purgeEvery {
		return nil
	}
	b.cmdPurged = now
	lo := []byte{prefixCommand, cmdIndex}
	upper := appendCmdIndexKey(nil, now.Add(-b.s.cmdRetention).UnixNano(), "")
	opts := &pebble.IterOptions{LowerBound: lo, UpperBound: upper}
	it, err := b.s.db.NewIter(opts)
	if err != nil {
		return fmt.Errorf("store: purging command records: %w", err)
	}
	some := it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil || !some {
		return err
	}
	// The commit just handed over may hold the last purge's deletes, not
	// yet visible in Pebble: let it land first (once a second at most, and
	// only with something to purge), then read what is left.
	if err := b.Wait(); err != nil {
		return err
	}
	if it, err = b.s.db.NewIter(opts); err != nil {
		return fmt.Errorf("store: purging command records: %w", err)
	}
	defer it.Close()
	w := b.w
	for ok := it.First(); ok && len(w.cmdPurge) < purgeMax; ok = it.Next() {
		k := it.Key()
		if len(k) < 2+8+1 {
			return fmt.Errorf("store: corrupt command index entry %q", k)
		}
		if w.cmdPurged == nil {
			w.cmdPurged = map[string]struct{}{}
		}
		w.cmdPurge = append(w.cmdPurge, string(k))
		w.cmdPurged[string(k[10:])] = struct{}{}
	}
	return it.Error()
}

// writeCommandPurge deletes the purged commands' records. Before the
// outcomes this work records: one of a purged id recorded again (the legacy
// wrote it again) is the id's new record.
func (w *commitWork) writeCommandPurge() error {
	for _, k := range w.cmdPurge {
		id := k[10:]
		for _, key := range [][]byte{[]byte(k), commandKey(cmdSubmitted, id), commandKey(cmdOutcome, id)} {
			if err := w.b.Delete(key, nil); err != nil {
				return fmt.Errorf("store: purging the records of command %s: %w", id, err)
			}
		}
	}
	return nil
}

// CommandsPurged counts the commands whose records the retention purged
// since open.
func (s *Store) CommandsPurged() uint64 { return s.cmdPurgedN.Load() }
