package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Tombstones. A delete leaves its row as a tombstone (records.go) so that a
// late change older than the delete (from another source, or a prepared
// transaction applied at its outcome) is recognised as stale instead of
// bringing the row back. Each tombstone is also indexed by when it was
// written:
//
//	't' + written at (Unix ns, u64 big endian) + row key  ->  change id (u64 LE)
//
// and purged once older than the retention (WithTombstoneRetention) by the
// batch, at commit time: the purge goes through the same row lookup as the
// guard, so it never deletes a row that a later write replaced (the change
// id must still match). An index entry whose row was overwritten is just
// dropped.

// DefaultTombstoneRetention is how long a delete's tombstone is kept by
// default: a change older than the delete that arrives later than this
// recreates the row.
const DefaultTombstoneRetention = 24 * time.Hour

// WithTombstoneRetention sets how long deletes' tombstones are kept (default
// DefaultTombstoneRetention). It bounds how late, after a delete, an older
// change of the row may still arrive without recreating it.
func WithTombstoneRetention(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("store: tombstone retention %v must be positive", d)
		}
		o.tombRetention = d
		return nil
	}
}

// purgeMax bounds the tombstones one commit purges, so a backlog (after a
// long downtime) is purged over several commits instead of stalling one.
const purgeMax = 4096

// purgeEvery is how often, at most, a commit looks for expired tombstones.
const purgeEvery = time.Second

// rowKeyTable returns the table of a row key.
func rowKeyTable(k []byte) (string, bool) {
	if len(k) < 2 || k[0] != prefixRow {
		return "", false
	}
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || n > uint64(len(k)-1-w) {
		return "", false
	}
	return string(k[1+w : 1+w+int(n)]), true
}

func appendTombKey(dst []byte, at int64, rowKey []byte) []byte {
	dst = append(dst, prefixTomb)
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	return append(dst, rowKey...)
}

// countTombstones counts the tombstone index at open.
func (s *Store) countTombstones() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixTomb}, UpperBound: []byte{prefixTomb + 1}})
	if err != nil {
		return fmt.Errorf("store: counting tombstones: %w", err)
	}
	n := int64(0)
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: counting tombstones: %w", err)
	}
	s.tombstones.Store(n)
	return nil
}

// purgeTombstones adds to the (empty) work being filled the purge of up to
// purgeMax tombstones written before now minus the retention.
func (b *Batch) purgeTombstones(now time.Time) error {
	if now.Sub(b.purged) < purgeEvery || b.s.tombstones.Load() == 0 {
		return nil
	}
	b.purged = now
	// The commit just handed over may hold the last purge's deletes, not
	// yet visible in Pebble: let it land first (once a second at most).
	if err := b.Wait(); err != nil {
		return err
	}
	cutoff := now.Add(-b.s.tombRetention).UnixNano()
	upper := appendTombKey(nil, cutoff, nil)
	it, err := b.s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixTomb}, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("store: purging tombstones: %w", err)
	}
	defer it.Close()
	w := b.w
	n, skipped := 0, 0
	for ok := it.First(); ok && n < purgeMax; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) < 9 || len(v) != 8 {
			return fmt.Errorf("store: corrupt tombstone index entry %q", k)
		}
		rowKey := k[9:]
		if t, ok := rowKeyTable(rowKey); ok && b.loadingTable(t) {
			// Kept while a load of its table runs: a late chunk must
			// not bring the row back (loads.go).
			if skipped++; skipped > 4*purgeMax {
				break
			}
			continue
		}
		m, err := b.current(rowKey)
		if err != nil {
			return err
		}
		if m.exists && m.tomb && m.id == leU64b(v) {
			start := len(w.rowBuf)
			w.rowBuf = append(w.rowBuf, rowKey...)
			w.addRow(rowOp{koff: int32(start), kend: int32(len(w.rowBuf)), vend: -1, seq: int32(len(w.rows))})
		}
		w.purge = append(w.purge, k...)
		w.purgeEnds = append(w.purgeEnds, len(w.purge))
		n++
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: purging tombstones: %w", err)
	}
	return nil
}
