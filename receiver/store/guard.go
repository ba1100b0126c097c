package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ferrysync/ferry/format"
)

// The row guard (the merge rule, receiver/README.md): a change is applied to
// a row only if it is newer than what the store holds for the row (a row or
// a tombstone):
//
//  1. both carry a legacy row version: newer iff its version is greater
//     (equal: already applied);
//  2. else, same source: newer iff its position (segment, offset, index) is
//     greater;
//  3. else (two sources, a version missing): applied, in arrival order, and
//     counted as a cross-source write without versions.
//
// Reading the current row costs a lookup per change, so the batch reads it
// only when the answer can differ from "apply": for a versioned change, for
// a prepared transaction applied at its outcome (a later transaction of the
// source may have been applied first), and once more than one source has
// written to the change's table. Otherwise, frames of one source come in
// position order and every change is newer than what it replaces (blind
// writes).

// rowMeta is what the guard needs of a stored row.
type rowMeta struct {
	exists  bool // a row or a tombstone
	tomb    bool
	source  []byte // aliases the record (or the batch's copy of it)
	seg     uint64
	off     int64
	idx     int
	version uint64
	id      uint64 // change id
}

// parseRowMeta decodes the guard's fields of a row record of any version.
func parseRowMeta(b []byte) (rowMeta, error) {
	r := reader{b: b}
	v := r.u8()
	if v != recordVersion && v != rowVersion2 && v != rowVersion && r.err == nil {
		return rowMeta{}, fmt.Errorf("store: row: unknown record version %d", v)
	}
	m := rowMeta{exists: true}
	m.tomb = format.Op(r.u8()) == format.OpDelete
	r.u8()
	if v == recordVersion {
		m.seg, m.off, m.idx = r.u64(), int64(r.u64()), int(r.u32())
		r.u64()
		m.id = r.u64()
	} else {
		m.seg, m.off, m.idx = r.uvarint(), int64(r.uvarint()), int(r.uvarint())
		r.u64()
		m.id = r.uvarint()
		if v == rowVersion {
			m.version = r.uvarint()
		}
	}
	m.source = r.bytes()
	if r.err != nil {
		return rowMeta{}, r.err
	}
	return m, nil
}

// verdict is what the guard decides for one change.
type verdict uint8

const (
	applyChange verdict = iota
	applyCross          // applied by arrival: two sources, a version missing
	skipStale           // not newer than the stored row
)

// judge applies the merge rule to change c, at v, against the stored m.
func judge(c *format.Change, v *Version, m *rowMeta) verdict {
	if !m.exists {
		return applyChange
	}
	if c.Version != 0 && m.version != 0 {
		if c.Version > m.version {
			return applyChange
		}
		return skipStale
	}
	if isLoadSource(m.source) {
		// A load row is the state of a snapshot taken before the change
		// was confirmed (the stream applies in order): the change is newer.
		return applyChange
	}
	if string(m.source) == v.Source {
		if v.Segment != m.seg {
			return pick(v.Segment > m.seg)
		}
		if v.Offset != m.off {
			return pick(v.Offset > m.off)
		}
		return pick(v.Index > m.idx)
	}
	return applyCross
}

func pick(newer bool) verdict {
	if newer {
		return applyChange
	}
	return skipStale
}

// current returns the guard's view of the row at key (a full row key): the
// last write buffered in the batch, else the commit in flight's, else
// Pebble's.
func (b *Batch) current(key []byte) (rowMeta, error) { return b.currentIn(key, nil) }

// currentIn is current reading Pebble through it (nil: a Get), an
// iterator whose bounds hold key: seeks in key order are cheaper than Gets.
func (b *Batch) currentIn(key []byte, it *pebble.Iterator) (rowMeta, error) {
	w := b.w
	w.indexRows()
	if i, ok := w.index[string(key)]; ok {
		return w.metaAt(w.rows[i])
	}
	if f := b.flying; f != nil {
		if r, ok := f.find(key); ok {
			m, err := f.metaAt(r)
			if err == nil && m.exists {
				b.srcBuf = append(b.srcBuf[:0], m.source...)
				m.source = b.srcBuf
			}
			return m, err
		}
	}
	if it != nil {
		if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
			if err := it.Error(); err != nil {
				return rowMeta{}, fmt.Errorf("store: reading row %q for the row guard: %w", key, err)
			}
			return rowMeta{}, nil
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return rowMeta{}, fmt.Errorf("store: reading row %q for the row guard: %w", key, err)
		}
		m, err := parseRowMeta(v)
		if err != nil {
			return rowMeta{}, fmt.Errorf("store: row %q: %w", key, err)
		}
		b.srcBuf = append(b.srcBuf[:0], m.source...)
		m.source = b.srcBuf
		return m, nil
	}
	v, closer, err := b.s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return rowMeta{}, nil
	}
	if err != nil {
		return rowMeta{}, fmt.Errorf("store: reading row %q for the row guard: %w", key, err)
	}
	defer closer.Close()
	m, err := parseRowMeta(v)
	if err != nil {
		return rowMeta{}, fmt.Errorf("store: row %q: %w", key, err)
	}
	b.srcBuf = append(b.srcBuf[:0], m.source...)
	m.source = b.srcBuf
	return m, nil
}

// indexRows builds the index of the work's buffered rows by key (the last
// write of each), once: from then on every row write updates it.
func (w *commitWork) indexRows() {
	if w.indexed {
		return
	}
	if w.index == nil {
		w.index = map[string]int32{}
	}
	for i, r := range w.rows {
		w.index[string(w.rowBuf[r.koff:r.kend])] = int32(i)
	}
	w.indexed = true
}

// metaAt returns the guard's view of a buffered row write.
func (w *commitWork) metaAt(r rowOp) (rowMeta, error) {
	if r.vend < 0 {
		return rowMeta{}, nil // purged
	}
	return parseRowMeta(w.rowBuf[r.kend:r.vend])
}

// find returns the last write of key in a work whose rows are sorted
// (prepare sorted them by key, writes of one key in order).
func (w *commitWork) find(key []byte) (rowOp, bool) {
	buf := w.rowBuf
	j := sort.Search(len(w.rows), func(i int) bool {
		r := w.rows[i]
		return bytes.Compare(buf[r.koff:r.kend], key) > 0
	})
	if j == 0 {
		return rowOp{}, false
	}
	r := w.rows[j-1]
	if !bytes.Equal(buf[r.koff:r.kend], key) {
		return rowOp{}, false
	}
	return r, true
}

// crossWarnEvery rate-limits the warning about cross-source writes without
// versions.
const crossWarnEvery = 10 * time.Second

// warnCross logs a cross-source write without versions, at most once every
// crossWarnEvery, with how many were not logged.
func (b *Batch) warnCross(c *format.Change, source string, m *rowMeta) {
	now := time.Now()
	if now.Sub(b.crossWarned) < crossWarnEvery {
		b.crossQuiet++
		return
	}
	b.s.log.Warn("two sources wrote the same row without row versions: the row keeps whichever arrived last, which need not be the database's state; have the legacy supply row versions (receiver/README.md, \"Merge rule\")",
		"table", c.Table, "key", fmt.Sprintf("%q", c.Key), "source", source, "previous_source", string(m.source),
		"not_logged_since_last", b.crossQuiet)
	b.crossWarned, b.crossQuiet = now, 0
}

// GuardStats counts what the row guard decided, since the store opened.
type GuardStats struct {
	// Stale is the changes skipped as not newer than the stored row.
	Stale uint64
	// UnversionedCrossSource is the changes applied to a row last written
	// by another source without a version on both sides: the result
	// depends on arrival order.
	UnversionedCrossSource uint64
	// Tombstones is the tombstones held (written, not yet purged; one
	// overwritten by a later write counts until its retention ends).
	Tombstones int64
	// Reads is the stored rows the guard read (the changes it checked).
	Reads uint64
}

// GuardStats returns the row guard's counters.
func (s *Store) GuardStats() GuardStats {
	return GuardStats{Stale: s.stale.Load(), UnversionedCrossSource: s.cross.Load(), Tombstones: s.tombstones.Load(), Reads: s.reads.Load()}
}

func leU64b(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
