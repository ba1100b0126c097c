package store

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ferrysync/ferry/format"
)

// ErrTrimmed means a change log cursor older than what the log still keeps.
var ErrTrimmed = errors.New("store: changes trimmed from the log")

// Get returns the current row of (table, key); ok is false when there is
// none (never written, or deleted: a tombstone is never returned).
func (s *Store) Get(table string, key []byte) (Row, bool, error) {
	k := s.rk.appendRow(make([]byte, 0, 16+len(table)+len(key)), table, key)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return Row{}, false, nil
	}
	if err != nil {
		return Row{}, false, fmt.Errorf("store: reading row %s/%q: %w", table, key, err)
	}
	defer closer.Close()
	row, err := decodeRow(table, append([]byte(nil), key...), bytes.Clone(v))
	if err != nil {
		return Row{}, false, err
	}
	if row.Op == format.OpDelete {
		return Row{}, false, nil // a tombstone
	}
	return row, true, nil
}

// Scan returns up to limit rows of table whose key starts with prefix and
// comes strictly after after (nil: from the start), in key order, and
// whether more follow; tombstones are skipped. The rows come from one
// consistent snapshot: a transaction is either wholly in it or not at all.
func (s *Store) Scan(table string, prefix, after []byte, limit int) ([]Row, bool, error) {
	return s.ScanPage(table, prefix, after, limit, 0)
}

// PageOverhead is what a row or change counts in a page's byte bound beyond
// its key and images: its other fields.
const PageOverhead = 64

// RowSize is what a row counts in a page's byte bound.
func RowSize(r *Row) int { return len(r.Table) + len(r.Key) + len(r.Value) + PageOverhead }

// ChangeSize is what a change counts in a page's byte bound.
func ChangeSize(c *Change) int {
	return len(c.Table) + len(c.Key) + len(c.After) + len(c.Before) + len(c.TxID) + len(c.Origin) + PageOverhead
}

// ScanPage is Scan with the page also ending once its rows reach maxBytes
// (RowSize; 0: no byte bound), after at least one row.
func (s *Store) ScanPage(table string, prefix, after []byte, limit, maxBytes int) ([]Row, bool, error) {
	tp := appendTablePrefix(nil, table)
	ranges := s.rk.prefixRanges(table, prefix)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: ranges[0][0], UpperBound: ranges[len(ranges)-1][1]})
	if err != nil {
		return nil, false, fmt.Errorf("store: scanning %s: %w", table, err)
	}
	defer it.Close()
	var from []byte // the smallest key after after
	if after != nil {
		from = append(s.rk.appendRow(nil, table, after), 0)
	}
	var rows []Row
	size := 0
	ok, sought := false, false
	for _, r := range ranges {
		lo, hi := r[0], r[1]
		if from != nil && bytes.Compare(from, lo) > 0 {
			lo = from
		}
		if bytes.Compare(lo, hi) >= 0 {
			continue
		}
		// The iterator stands at the first key past the previous range:
		// a seek only if that is before this one (empty lengths of a
		// numeric prefix cost nothing).
		if !sought || bytes.Compare(it.Key(), lo) < 0 {
			ok, sought = it.SeekGE(lo), true
		}
		for ; ok && bytes.Compare(it.Key(), hi) < 0; ok = it.Next() {
			if v := it.Value(); len(v) > 1 && format.Op(v[1]) == format.OpDelete {
				continue // a tombstone
			}
			if len(rows) == limit || (maxBytes > 0 && size >= maxBytes) {
				return rows, true, nil
			}
			key, err := s.rk.decodeKey(it.Key()[len(tp):])
			if err != nil {
				return nil, false, err
			}
			row, err := decodeRow(table, bytes.Clone(key), bytes.Clone(it.Value()))
			if err != nil {
				return nil, false, err
			}
			rows = append(rows, row)
			size += RowSize(&row)
		}
		if !ok {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("store: scanning %s: %w", table, err)
	}
	return rows, false, nil
}

// TrimmedAfter reports whether a reader that has every change up to after
// needs changes that a log starting at first no longer holds. (after+1
// overflows for after = 2^64-1, a cursor past any log.)
func TrimmedAfter(after, first uint64) bool { return first > 0 && after < first-1 }

// Changes returns up to limit changes with ids after after, in order. It
// returns ErrTrimmed if changes after after were already trimmed.
func (s *Store) Changes(after uint64, limit int) ([]Change, error) {
	return s.ChangesPage(after, limit, 0)
}

// ChangesPage is Changes with the page also ending once its changes reach
// maxBytes (ChangeSize; 0: no byte bound), after at least one change. Besides
// the page, a read holds the change log entry it is decoding (at most a
// message's raw size).
func (s *Store) ChangesPage(after uint64, limit, maxBytes int) ([]Change, error) {
	first, last := s.ChangeRange()
	if TrimmedAfter(after, first) {
		return nil, fmt.Errorf("%w: asked for changes after %d, the log starts at %d", ErrTrimmed, after, first)
	}
	if after >= last || limit <= 0 {
		return nil, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixChange}, UpperBound: []byte{prefixChange + 1}})
	if err != nil {
		return nil, fmt.Errorf("store: reading changes: %w", err)
	}
	defer it.Close()
	// The entry holding after+1 is the last one starting at or before it.
	ok := it.SeekLT(appendChangeKey(nil, after+2))
	if !ok {
		ok = it.First()
	}
	var out []Change
	lr := logReader{l: s.logs}
	defer lr.close()
	size := 0
	for ; ok && len(out) < limit && (maxBytes <= 0 || size < maxBytes); ok = it.Next() {
		id, _ := changeKeyID(it.Key())
		v, err := it.ValueAndErr()
		if err == nil && len(v) > 0 && v[0] == indexVersion {
			var x indexRecord
			if x, err = decodeIndex(id, v); err == nil && id+uint64(x.changes)-1 <= after {
				continue // all before the cursor: skip the read
			} else if err == nil {
				v, err = lr.entry(id, &x)
			}
		}
		if err != nil {
			if first2, _ := s.ChangeRange(); TrimmedAfter(after, first2) {
				break // trimmed under us: reported below
			}
			return nil, fmt.Errorf("store: reading change log entry %d: %w", id, err)
		}
		n := len(out)
		if out, err = decodeEntry(s.dec, id, v, after, limit, out); err != nil {
			return nil, err
		}
		if maxBytes > 0 {
			for i := n; i < len(out); i++ {
				if size >= maxBytes {
					clear(out[i:])
					out = out[:i]
					break
				}
				size += ChangeSize(&out[i])
			}
			// The changes alias the decoded entry (up to a message's raw
			// size): copy what the page keeps, so that a page holds its
			// own bytes only.
			detach(out[n:])
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("store: reading changes: %w", err)
	}
	// A concurrent trim may have removed the first ones between the check
	// and the iterator (or their file while reading it): never return a log
	// with a hole at its start.
	if first2, _ := s.ChangeRange(); TrimmedAfter(after, first2) {
		return nil, fmt.Errorf("%w: asked for changes after %d, the log starts at %d", ErrTrimmed, after, first2)
	}
	if len(out) > 0 && out[0].ID != after+1 {
		return nil, fmt.Errorf("store: change log has a hole: after %d comes %d", after, out[0].ID)
	}
	return out, nil
}

// entryAt returns the header of the change log entry holding id.
func (s *Store) entryAt(id uint64) (logEntry, bool, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixChange}, UpperBound: []byte{prefixChange + 1}})
	if err != nil {
		return logEntry{}, false, fmt.Errorf("store: reading the change log: %w", err)
	}
	defer it.Close()
	if !it.SeekLT(appendChangeKey(nil, id+1)) {
		return logEntry{}, false, it.Error()
	}
	first, _ := changeKeyID(it.Key())
	v, err := it.ValueAndErr()
	if err != nil {
		return logEntry{}, false, fmt.Errorf("store: reading change log entry %d: %w", first, err)
	}
	var e logEntry
	if len(v) > 0 && v[0] == indexVersion {
		x, err := decodeIndex(first, v)
		if err != nil {
			return logEntry{}, false, err
		}
		e = logEntry{first: first, changes: int(x.changes), applied: x.applied}
	} else if e, _, err = entryHeader(first, v); err != nil {
		return logEntry{}, false, err
	}
	return e, id < first+uint64(e.changes), nil
}

// Trim removes old changes from the log: those beyond the newest keep (0:
// no count bound) and those applied more than maxAge ago (0: no age bound),
// but never a change after floor (a subscriber such as the webhook that has
// not consumed it yet). The log is stored in entries of many changes, so it
// removes whole entries only: up to the entry holding the first change to
// keep. It returns how many changes it removed.
func (s *Store) Trim(keep uint64, maxAge time.Duration, floor uint64) (uint64, error) {
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	first, last := s.ChangeRange()
	if first > last {
		return 0, nil
	}
	cut := first // the first change to keep
	if keep > 0 && last-first+1 > keep {
		cut = last - keep + 1
	}
	if maxAge > 0 {
		limit := time.Now().Add(-maxAge).UnixNano()
		// Applied times grow with ids: binary search the first young one.
		n := int(last - first + 1)
		var serr error
		i := sort.Search(n, func(i int) bool {
			e, ok, err := s.entryAt(first + uint64(i))
			if err != nil && serr == nil {
				serr = err
			}
			return !ok || e.applied >= limit
		})
		if serr != nil {
			return 0, serr
		}
		if c := first + uint64(i); c > cut {
			cut = c
		}
	}
	if cut-1 > floor { // cut >= first >= 1
		cut = floor + 1
	}
	if cut <= first {
		return 0, nil
	}
	// Keep the whole entry holding cut.
	if cut <= last {
		e, ok, err := s.entryAt(cut)
		if err != nil {
			return 0, err
		}
		if ok {
			cut = e.first
		}
	}
	if cut <= first {
		return 0, nil
	}
	// Move the start first so that readers refuse the doomed range before it
	// disappears under them.
	s.mu.Lock()
	s.firstChange = cut
	s.mu.Unlock()
	if err := s.db.DeleteRange(appendChangeKey(nil, first), appendChangeKey(nil, cut), s.wo); err != nil {
		return 0, fmt.Errorf("store: trimming changes [%d, %d): %w", first, cut, err)
	}
	if err := s.trimMarks(cut); err != nil {
		return 0, err
	}
	s.committed()
	// Files that hold only trimmed entries go once the trim of their
	// index is durable: before, a crash could bring back index records
	// pointing at them. Without a WAL that takes a flush, so it waits until
	// a whole file can go.
	if s.logs.removable(cut) {
		if err := s.Sync(); err != nil {
			return cut - first, err
		}
		if err := s.logs.removeBefore(cut); err != nil {
			return cut - first, err
		}
	}
	return cut - first, nil
}

// detach copies the images and keys of cs into one buffer of their own.
func detach(cs []Change) {
	n := 0
	for i := range cs {
		n += len(cs[i].Key) + len(cs[i].After) + len(cs[i].Before)
	}
	buf := make([]byte, 0, n)
	cp := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		buf = append(buf, b...)
		return buf[len(buf)-len(b) : len(buf) : len(buf)]
	}
	for i := range cs {
		c := &cs[i]
		c.Key, c.After, c.Before = cp(c.Key), cp(c.After), cp(c.Before)
	}
}
