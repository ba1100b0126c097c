package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ferrysync/ferry/format"
)

// Parked transactions. A prepared transaction frame (format.Tx.Prepared:
// appended before the database's COMMIT) is not applied when it arrives: it
// is parked, in Pebble and in the same commit as the position that moves
// past it, so a restart keeps it and RAM holds none of it. An outcome frame
// later names it by position: committed applies it then, with the identity
// of the prepared frame (its changes go through the row guard as a late
// apply, so a later transaction of the source already applied to a row
// wins); aborted drops it. Resolving removes it in the same commit as what
// it applied, so a resolution takes effect once: an outcome read again
// (after a crash) finds nothing parked and is ignored, as is one naming
// anything else never parked here (counted: OutcomeStats.Unmatched).
//
// Record, under 'q' + uvarint(len(source)) + source + segment (u64 BE) +
// offset (u64 BE):
//
//	| version u8 = 1 | parked at (Unix ns) i64 | the frame (header included) |

func appendParkPrefix(dst []byte, source string) []byte {
	dst = append(dst, prefixPark)
	dst = binary.AppendUvarint(dst, uint64(len(source)))
	return append(dst, source...)
}

func appendParkKey(dst []byte, source string, p format.Position) []byte {
	dst = appendParkPrefix(dst, source)
	dst = binary.BigEndian.AppendUint64(dst, p.Segment)
	return binary.BigEndian.AppendUint64(dst, uint64(p.Offset))
}

// parkKeySource returns the source a park key names.
func parkKeySource(k []byte) (string, bool) {
	if len(k) < 2 || k[0] != prefixPark {
		return "", false
	}
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)-1-w) != n+16 {
		return "", false
	}
	return string(k[1+w : 1+w+int(n)]), true
}

const parkHeader = 1 + 8

// pendingPark is a park or a resolution not yet in Pebble.
type pendingPark struct {
	val []byte // nil once resolved
	gen uint64 // the work that writes it
	idx int    // a park's index in that work's parks
}

// ParkTx parks the prepared transaction whose frame spans [off, end) of
// segment seg of source, moving the source past it: nothing of it is
// applied until an outcome frame names it (Resolve).
func (b *Batch) ParkTx(source string, seg uint64, off, end int64, streamSeq uint64, tx *format.Tx, frame []byte) error {
	if int64(len(frame)) != end-off {
		return fmt.Errorf("store: frame of %d bytes for range [%d, %d)", len(frame), off, end)
	}
	if !tx.Prepared {
		return fmt.Errorf("store: parking the transaction at %s:%d:%d, which is not prepared", source, seg, off)
	}
	if _, err := b.advance(source, seg, off, end, streamSeq, tx.CommitTime); err != nil {
		return err
	}
	w := b.w
	k := appendParkKey(nil, source, format.Position{Segment: seg, Offset: off})
	v := make([]byte, 0, parkHeader+len(frame))
	v = append(v, recordVersion)
	v = binary.LittleEndian.AppendUint64(v, uint64(time.Now().UnixNano()))
	v = append(v, frame...)
	w.parks = append(w.parks, kv{k, v})
	if b.pending == nil {
		b.pending = map[string]pendingPark{}
	}
	b.pending[string(k)] = pendingPark{val: v, gen: b.gen, idx: len(w.parks) - 1}
	w.parkDelta(source, 1)
	b.bytes += end - off
	return nil
}

type kv struct{ k, v []byte }

func (w *commitWork) parkDelta(source string, d int64) {
	if w.parkCount == nil {
		w.parkCount = map[string]int64{}
	}
	w.parkCount[source] += d
}

// Resolve carries out one resolution of an outcome frame of source:
// committed applies the parked transaction it names (changes: how many of
// its changes passed the row guard), aborted drops it. found is false when
// nothing is parked at that position (already resolved, or never parked
// here): the resolution is ignored and counted. It does not move the
// source's position: the outcome frame does (Advance), once all its
// resolutions are carried out.
func (b *Batch) Resolve(source string, r format.Resolution) (changes int, found bool, err error) {
	if b.err != nil {
		return 0, false, b.err
	}
	w := b.w
	k := appendParkKey(nil, source, r.Prepared)
	val, ok, err := b.parked(k)
	if err != nil {
		return 0, false, err
	}
	if !ok {
		w.unmatched++
		return 0, false, nil
	}
	if e, ok := b.pending[string(k)]; ok && e.val != nil && e.gen == b.gen {
		// Parked by the work this resolution goes in (the outcome came
		// in the same batch, as it mostly does): neither the park nor
		// its removal need reach Pebble.
		w.parks[e.idx].v = nil
	} else {
		w.unparks = append(w.unparks, k)
	}
	if b.pending == nil {
		b.pending = map[string]pendingPark{}
	}
	b.pending[string(k)] = pendingPark{gen: b.gen}
	w.parkDelta(source, -1)
	if r.Decision != format.DecisionCommitted {
		w.aborted++
		return 0, true, nil
	}
	w.committedOut++
	if len(val) < parkHeader || val[0] != recordVersion {
		return 0, false, fmt.Errorf("store: parked transaction %s at %s: corrupt record", source, r.Prepared)
	}
	frame := val[parkHeader:]
	f, n, err := format.ParseFrame(frame)
	if err == nil && (n != len(frame) || f.Type != format.FrameTx) {
		err = errors.New("not one transaction frame")
	}
	if err == nil {
		err = format.DecodeTx(f.Payload, &b.parkTx)
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: parked transaction %s at %s: %w", source, r.Prepared, err)
	}
	applied, err := b.applyChanges(source, r.Prepared.Segment, r.Prepared.Offset, &b.parkTx, frame, true)
	if err != nil {
		return 0, false, err
	}
	p := b.Position(source)
	if b.parkTx.CommitTime > p.LastCommit {
		p.LastCommit = b.parkTx.CommitTime
	}
	p.Transactions++
	p.Changes += uint64(applied)
	b.pos[source] = p
	b.dirty[source] = true
	b.txs++
	return applied, true, nil
}

// parked returns the parked record at k: a park or resolution of this
// batch not yet in Pebble first, else Pebble's.
func (b *Batch) parked(k []byte) ([]byte, bool, error) {
	if e, ok := b.pending[string(k)]; ok {
		return e.val, e.val != nil, nil
	}
	v, closer, err := b.s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: reading a parked transaction: %w", err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// landed forgets the pending parks and resolutions of works up to gen, now
// in Pebble.
func (b *Batch) landed(gen uint64) {
	for k, e := range b.pending {
		if e.gen <= gen {
			delete(b.pending, k)
		}
	}
}

// countParked counts the parked transactions per source at open.
func (s *Store) countParked() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPark}, UpperBound: []byte{prefixPark + 1}})
	if err != nil {
		return fmt.Errorf("store: counting parked transactions: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		src, ok := parkKeySource(it.Key())
		if !ok {
			it.Close()
			return fmt.Errorf("store: corrupt parked transaction key %q", it.Key())
		}
		s.parked[src]++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: counting parked transactions: %w", err)
	}
	return nil
}

// ParkedStats describes the parked transactions: prepared, their outcome
// not yet received.
type ParkedStats struct {
	Count    int64
	BySource map[string]int64
	// Oldest is when the longest-parked one was parked (zero if none).
	Oldest time.Time
}

// ParkedStats returns the parked transactions' count and the oldest one's
// time (a Pebble read per source that has any).
func (s *Store) ParkedStats() (ParkedStats, error) {
	st := ParkedStats{BySource: map[string]int64{}}
	s.mu.Lock()
	for src, n := range s.parked {
		if n > 0 {
			st.BySource[src] = n
			st.Count += n
		}
	}
	s.mu.Unlock()
	if st.Count == 0 {
		return st, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPark}, UpperBound: []byte{prefixPark + 1}})
	if err != nil {
		return st, fmt.Errorf("store: reading parked transactions: %w", err)
	}
	defer it.Close()
	for src := range st.BySource {
		// A source's parks are in position order, so in the order they
		// were parked: its first is its oldest.
		pfx := appendParkPrefix(nil, src)
		if !it.SeekGE(pfx) || len(it.Key()) != len(pfx)+16 || string(it.Key()[:len(pfx)]) != string(pfx) {
			continue
		}
		if v := it.Value(); len(v) >= parkHeader {
			t := time.Unix(0, int64(binary.LittleEndian.Uint64(v[1:])))
			if st.Oldest.IsZero() || t.Before(st.Oldest) {
				st.Oldest = t
			}
		}
	}
	return st, it.Error()
}

// OutcomeStats counts the resolutions of outcome frames carried out since
// the store opened.
type OutcomeStats struct {
	Committed, Aborted uint64
	// Unmatched resolutions named nothing parked (already resolved, or
	// prepared before this receiver's start) and were ignored.
	Unmatched uint64
}

// OutcomeStats returns the outcome counters.
func (s *Store) OutcomeStats() OutcomeStats {
	return OutcomeStats{Committed: s.outCommitted.Load(), Aborted: s.outAborted.Load(), Unmatched: s.outUnmatched.Load()}
}
