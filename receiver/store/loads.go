package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// Initial loads (receiver/README.md, "Initial load"). A load sends a table's
// existing rows into the stream in chunks; each chunk was read from a
// snapshot taken after the stream held seq L (its low watermark), so every
// change the chunk does not reflect is confirmed in a message after L. The
// merge rule for a load row of (table, key), against what the store holds:
//
//  1. nothing: the row is inserted;
//  2. a row or tombstone written by a live change whose message has stream
//     seq > L: the load row is dropped (the live change is newer, DBLog's
//     window); when the store cannot tell the message (its marks were
//     trimmed past it) it drops too, which is safe: a live row converges
//     through the live changes that follow;
//  3. both carry row versions and the held one is higher: dropped;
//  4. otherwise the load row overwrites what is held (a re-load repairs a
//     damaged row; a chunk re-applied after a crash rewrites its own rows).
//
// Telling rule 2 needs the stream seq of the message a held row's change
// came from. Rows hold their change id, and ids are assigned in stream
// order, so the store keeps, per commit, which ids came from which message:
//
//	'x' + first change id (u64 BE) -> | 1 | n uvarint | n x ( id delta uvarint | stream seq uvarint ) |
//
// one pair per message that took ids (the id its first change took, from
// the record's key), trimmed with the change log: a row older than the
// oldest record came from a message at or before that record's first one.
//
// Per load the store keeps its state, committed in the same batch as the
// rows of each load message, so a message is applied exactly once:
//
//	'l' + load id -> | 1 | JSON LoadState |
//
// Load rows are stored with Version.Source "load:<id>" (":" is never in a
// source name), Segment the chunk, Offset the part: the change log, the feed
// and the API show them as from the load. Loads never count as a table's
// writer (the row guard's cross-source check): a live change after a load
// row is applied like one after the source's own rows.
const (
	prefixMark = 'x'
	prefixLoad = 'l'
)

// LoadSourcePrefix starts the Version.Source of rows written by a load.
const LoadSourcePrefix = "load:"

// LoadOf returns the load id of a Version.Source written by a load.
func LoadOf(source string) (string, bool) {
	if len(source) > len(LoadSourcePrefix) && source[:len(LoadSourcePrefix)] == LoadSourcePrefix {
		return source[len(LoadSourcePrefix):], true
	}
	return "", false
}

func isLoadSource(src []byte) bool { return bytes.HasPrefix(src, []byte(LoadSourcePrefix)) }

// Load states.
const (
	LoadLoading = "loading"
	LoadDone    = "done"
	LoadFailed  = "failed"
)

// LoadState is what the store knows of one load.
type LoadState struct {
	ID    string `json:"id"`
	Table string `json:"table"`
	State string `json:"state"`
	// Applied says a chunk message was applied; Chunk, LowSeq and Part name
	// the last one (messages up to it are duplicates).
	Applied bool   `json:"applied,omitempty"`
	Chunk   uint64 `json:"chunk"`
	LowSeq  uint64 `json:"low_seq"`
	Part    int    `json:"part"`
	// Rows counts the load rows applied, Dropped those the merge rule
	// dropped (a live change was newer), Bulk those written by sstable
	// ingestion.
	Rows    uint64 `json:"rows"`
	Dropped uint64 `json:"dropped"`
	Bulk    uint64 `json:"bulk"`
	// Estimate is the loader's estimate of the table's rows (begin), Sent
	// what it says it sent (done).
	Estimate uint64 `json:"estimate"`
	Sent     uint64 `json:"sent,omitempty"`
	// Began and Updated: when this receiver applied the load's first and
	// last message, Unix ns; FirstSeq the stream seq of its first message.
	Began    int64  `json:"began"`
	Updated  int64  `json:"updated"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	// Error says why the load failed; FailedSeq is the message it failed at.
	Error     string `json:"error,omitempty"`
	FailedSeq uint64 `json:"failed_seq,omitempty"`
}

// ErrLoadInput means a load message's content breaks the load format's
// rules (a row of another table, a delete, an empty key): the load fails,
// nothing of the message is applied.
var ErrLoadInput = errors.New("store: bad load message")

// LoadChunk is one chunk message of a load: rows of one table read from a
// snapshot taken after the stream held LowSeq.
type LoadChunk struct {
	Load   string
	Table  string
	Chunk  uint64
	Part   int
	LowSeq uint64
	// Tx holds the rows (inserts or upserts with after images, versions
	// where the table has them). The change log keeps either Frame, its
	// encoded frame, or Body, the message body that inflates to its
	// RawLen bytes with Codec, as it came.
	Tx     *format.Tx
	Frame  []byte
	Body   []byte
	Codec  wire.Codec
	RawLen int
}

// LoadResult says what ApplyLoad did with a chunk.
type LoadResult struct {
	Applied, Dropped int
	// Duplicate: the message was applied before (or its load failed):
	// nothing done.
	Duplicate bool
	// Bulk: the rows went in as an ingested sstable.
	Bulk bool
}

func loadKey(id string) []byte { return append([]byte{prefixLoad}, id...) }

// SetMessageSeq tells the batch the stream seq of the message whose frames
// come next: the change ids they take are recorded against it (the load
// rule's marks).
func (b *Batch) SetMessageSeq(seq uint64) { b.seq = seq }

// takeID assigns the next change id, noting the message it came from.
func (b *Batch) takeID() uint64 {
	id := b.next
	b.next++
	w := b.w
	if n := len(w.marks); n == 0 || w.marks[n-1].seq != b.seq {
		w.marks = append(w.marks, idSeq{id: id, seq: b.seq})
	}
	return id
}

// idSeq: the changes from id on (to the next idSeq) came from the message
// at stream seq seq.
type idSeq struct{ id, seq uint64 }

func appendMarkKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixMark), id)
}

func appendMarks(dst []byte, ms []idSeq) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, uint64(len(ms)))
	for _, m := range ms {
		dst = binary.AppendUvarint(dst, m.id-ms[0].id)
		dst = binary.AppendUvarint(dst, m.seq)
	}
	return dst
}

// markSeq finds in ms (sorted by id, ms[0].id <= id) the seq of id.
func markSeq(ms []idSeq, id uint64) uint64 {
	i := sort.Search(len(ms), func(i int) bool { return ms[i].id > id })
	return ms[i-1].seq
}

// seqOf returns the stream seq of the message change id came from: exact,
// or (exact false) an upper bound when the marks no longer reach back to
// it; known false when the store has no marks at all.
func (b *Batch) seqOf(id uint64) (seq uint64, exact, known bool, err error) {
	for _, w := range []*commitWork{b.w, b.flying} {
		if w != nil && len(w.marks) > 0 && id >= w.marks[0].id {
			return markSeq(w.marks, id), true, true, nil
		}
	}
	it, err := b.s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixMark}, UpperBound: []byte{prefixMark + 1}})
	if err != nil {
		return 0, false, false, fmt.Errorf("store: reading change id marks: %w", err)
	}
	defer it.Close()
	exact = true
	if !it.SeekLT(appendMarkKey(nil, id+1)) {
		exact = false
		if !it.First() {
			// No marks yet: the row is older than every commit of this
			// store version; the flying or filling works may still have
			// the first marks.
			for _, w := range []*commitWork{b.flying, b.w} {
				if w != nil && len(w.marks) > 0 {
					return w.marks[0].seq, false, true, nil
				}
			}
			return 0, false, false, it.Error()
		}
	}
	k, v := it.Key(), it.Value()
	if len(k) != 9 {
		return 0, false, false, fmt.Errorf("store: corrupt change id mark key %q", k)
	}
	first := binary.BigEndian.Uint64(k[1:])
	r := reader{b: v}
	r.u8()
	n := r.uvarint()
	if n == 0 || n > uint64(len(v)) {
		r.fail("bad mark count")
	}
	var best uint64
	for i := uint64(0); i < n && r.err == nil; i++ {
		d, s := r.uvarint(), r.uvarint()
		if i == 0 || first+d <= id {
			best = s
		}
		if !exact {
			break // the first message's seq bounds the older ids
		}
	}
	if r.err != nil {
		return 0, false, false, fmt.Errorf("store: change id mark %d: %w", first, r.err)
	}
	return best, exact, true, nil
}

// writeMarks adds the work's id marks to its Pebble batch.
func (w *commitWork) writeMarks() error {
	if len(w.marks) == 0 {
		return nil
	}
	w.key = appendMarkKey(w.key[:0], w.marks[0].id)
	w.val = appendMarks(w.val[:0], w.marks)
	if err := w.b.Set(w.key, w.val, nil); err != nil {
		return fmt.Errorf("store: recording change id marks: %w", err)
	}
	return nil
}

// loadState returns a load's state including this batch's changes.
func (b *Batch) loadState(id string) (LoadState, bool, error) {
	if st, ok := b.loads[id]; ok {
		return st, true, nil
	}
	return b.s.Load(id)
}

func (b *Batch) setLoad(st LoadState) {
	if b.loads == nil {
		b.loads = map[string]LoadState{}
	}
	b.loads[st.ID] = st
	if b.w.loads == nil {
		b.w.loads = map[string]LoadState{}
	}
	b.w.loads[st.ID] = st
	b.loadDirty = true
}

// loadingTable reports whether a load of table is in progress: its
// tombstones are kept meanwhile, whatever their age.
func (b *Batch) loadingTable(table string) bool {
	for _, st := range b.loads {
		if st.Table == table && st.State == LoadLoading {
			return true
		}
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	for id, st := range b.s.loads {
		if _, ok := b.loads[id]; !ok && st.Table == table && st.State == LoadLoading {
			return true
		}
	}
	return false
}

// BeginLoad records the start of load id of table (its begin message, at
// stream seq seq): state loading. A begin for a load already known resumes
// it (a rerun of the loader): its counts are kept and a failure is
// cleared if the begin comes after it.
func (b *Batch) BeginLoad(id, table string, estimate, seq uint64) error {
	if b.err != nil {
		return b.err
	}
	st, ok, err := b.loadState(id)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	if !ok {
		st = LoadState{ID: id, Table: table, State: LoadLoading, Began: now, FirstSeq: seq}
	}
	if st.State == LoadFailed && seq > st.FailedSeq {
		st.State, st.Error, st.FailedSeq = LoadLoading, "", 0
	}
	if estimate > 0 {
		st.Estimate = estimate
	}
	st.Updated = now
	b.setLoad(st)
	return nil
}

// EndLoad records the end of a load: done (its done message, sent being
// the rows the loader says it sent) or failed with reason (a failed message
// from the loader, or a message of the load the receiver refused).
func (b *Batch) EndLoad(id, table string, done bool, sent uint64, reason string, seq uint64) error {
	if b.err != nil {
		return b.err
	}
	st, ok, err := b.loadState(id)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	if !ok {
		st = LoadState{ID: id, Table: table, Began: now, FirstSeq: seq}
	}
	switch {
	case done && st.State == LoadFailed:
		return nil // a done after a refused message: the load stays failed
	case done:
		st.State, st.Sent = LoadDone, sent
	default:
		if st.State == LoadFailed {
			return nil // the first reason stays
		}
		st.State, st.Error, st.FailedSeq = LoadFailed, reason, seq
	}
	st.Updated = now
	b.setLoad(st)
	return nil
}

// ApplyLoad applies the rows of a load chunk message under the load merge
// rule (above), with the load's position in the same batch: a message
// applied before is a duplicate. A chunk whose key range holds no key in
// the store goes in as an ingested sstable when the store allows it
// (WithBulkLoad), else through the batch.
func (b *Batch) ApplyLoad(c *LoadChunk) (LoadResult, error) {
	if b.err != nil {
		return LoadResult{}, b.err
	}
	if _, err := checkLoadRows(c); err != nil {
		return LoadResult{}, err
	}
	st, ok, err := b.loadState(c.Load)
	if err != nil {
		return LoadResult{}, err
	}
	now := time.Now().UnixNano()
	if !ok {
		// No begin seen (the stream no longer holds it): start here.
		st = LoadState{ID: c.Load, Table: c.Table, State: LoadLoading, Began: now, FirstSeq: b.seq}
	}
	if st.State == LoadFailed {
		return LoadResult{Duplicate: true}, nil
	}
	if st.Applied && !loadAfter(c, &st) {
		return LoadResult{Duplicate: true}, nil
	}
	var res LoadResult
	if b.s.bulkLoad && len(c.Tx.Changes) >= bulkMinRows {
		res, err = b.ingestLoad(c)
		if err != nil {
			return LoadResult{}, err
		}
	}
	if !res.Bulk {
		if res, err = b.batchLoad(c); err != nil {
			return LoadResult{}, err
		}
	}
	st.Applied, st.Chunk, st.LowSeq, st.Part = true, c.Chunk, c.LowSeq, c.Part
	st.Rows += uint64(res.Applied)
	st.Dropped += uint64(res.Dropped)
	if res.Bulk {
		st.Bulk += uint64(res.Applied)
	}
	if st.State == LoadDone {
		// A chunk after done (a rerun of a finished load): loading again.
		st.State = LoadLoading
	}
	st.Updated = now
	b.setLoad(st)
	return res, nil
}

// loadAfter reports whether chunk message c comes after the last one
// applied of its load: by chunk, then low watermark (a chunk re-read after
// the loader restarted has a later one and is applied again from its first
// part), then part.
func loadAfter(c *LoadChunk, st *LoadState) bool {
	if c.Chunk != st.Chunk {
		return c.Chunk > st.Chunk
	}
	if c.LowSeq != st.LowSeq {
		return c.LowSeq > st.LowSeq
	}
	return c.Part > st.Part
}

// checkLoadRows checks a chunk's rows against the load format's rules.
func checkLoadRows(c *LoadChunk) (int, error) {
	if c.Tx == nil {
		return 0, fmt.Errorf("%w: load %s chunk %d part %d: no rows", ErrLoadInput, c.Load, c.Chunk, c.Part)
	}
	for i := range c.Tx.Changes {
		ch := &c.Tx.Changes[i]
		switch {
		case ch.Table != c.Table:
			return i, fmt.Errorf("%w: load %s chunk %d part %d: row %d is of table %q, the load is of %q", ErrLoadInput, c.Load, c.Chunk, c.Part, i, ch.Table, c.Table)
		case ch.Op == format.OpDelete:
			return i, fmt.Errorf("%w: load %s chunk %d part %d: row %d is a delete", ErrLoadInput, c.Load, c.Chunk, c.Part, i)
		case len(ch.Key) == 0:
			return i, fmt.Errorf("%w: load %s chunk %d part %d: row %d has an empty key", ErrLoadInput, c.Load, c.Chunk, c.Part, i)
		}
	}
	return 0, nil
}

// logLoad starts the change log entry of a load chunk message.
func (b *Batch) logLoad(c *LoadChunk) *logEntry {
	w := b.w
	b.body.open = false
	e := w.newEntry()
	e.first, e.source, e.segment = b.next, LoadSourcePrefix+c.Load, c.Chunk
	e.offsets = append(e.offsets, int64(c.Part))
	if c.Body != nil && c.Codec != wire.CodecNone {
		e.hasBody, e.from, e.rawLen, e.codec = true, int64(c.Part), c.RawLen, c.Codec
		e.body = append(e.body, c.Body...)
	} else {
		e.raw = append(e.raw, c.Frame...)
	}
	w.entryOK = false
	return e
}

// batchLoad applies a chunk's rows through the batch, each judged. The
// held rows are read in key order through one iterator over the chunk's
// range (a Get per row of a big store cost ~15 µs, most of it reading
// index and filter blocks again), then the rows are written in their
// order in the chunk (the change ids follow it).
func (b *Batch) batchLoad(c *LoadChunk) (LoadResult, error) {
	if err := b.flushIngest(); err != nil {
		return LoadResult{}, err
	}
	chs := c.Tx.Changes
	order := b.loadOrder[:0]
	for i := range chs {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(x, y int32) int { return b.s.rk.compare(chs[x].Key, chs[y].Key) })
	b.loadOrder = order
	loKey := b.s.rk.appendRow(nil, c.Table, chs[order[0]].Key)
	upper := append(b.s.rk.appendRow(nil, c.Table, chs[order[len(order)-1]].Key), 0)
	it, err := b.s.db.NewIter(&pebble.IterOptions{LowerBound: loKey, UpperBound: upper})
	if err != nil {
		return LoadResult{}, fmt.Errorf("store: reading a load chunk's key range: %w", err)
	}
	ok := slices.Grow(b.loadOK[:0], len(chs))[:len(chs)]
	b.loadOK = ok
	w := b.w
	for _, i := range order {
		b.keyBuf = b.s.rk.appendRow(b.keyBuf[:0], c.Table, chs[i].Key)
		w.reads++
		m, err := b.currentIn(b.keyBuf, it)
		if err == nil {
			ok[i], err = b.judgeLoad(&chs[i], &m, c.LowSeq)
		}
		if err != nil {
			it.Close()
			return LoadResult{}, err
		}
	}
	if err := it.Close(); err != nil {
		return LoadResult{}, fmt.Errorf("store: reading a load chunk's key range: %w", err)
	}
	e := b.logLoad(c)
	v := Version{Source: LoadSourcePrefix + c.Load, Segment: c.Chunk, Offset: int64(c.Part)}
	tv := b.tver[c.Table]
	var res LoadResult
	for i := range chs {
		ch := &chs[i]
		v.Index = i
		if !ok[i] {
			res.Dropped++
			e = &w.entries[len(w.entries)-1]
			e.skips = append(e.skips, skipRef{frame: 0, index: int32(i)})
			continue
		}
		id := b.takeID()
		start := len(w.rowBuf)
		w.rowBuf = b.s.rk.appendRow(w.rowBuf, c.Table, ch.Key)
		kend := len(w.rowBuf)
		w.rowBuf = appendRow(w.rowBuf, ch, &v, c.Tx.CommitTime, id)
		w.addRow(rowOp{koff: int32(start), kend: int32(kend), vend: int32(len(w.rowBuf)), seq: int32(len(w.rows))})
		b.noteTableVer(c.Table, &tv, ch.Version)
		res.Applied++
	}
	e = &w.entries[len(w.entries)-1]
	e.changes += res.Applied
	b.changes += res.Applied
	w.loadRows += res.Applied
	return res, nil
}

// judgeLoad applies the load merge rule to load row c, from a chunk with
// low watermark low, against the stored m.
func (b *Batch) judgeLoad(c *format.Change, m *rowMeta, low uint64) (bool, error) {
	if !m.exists {
		return true, nil
	}
	if !isLoadSource(m.source) {
		seq, _, known, err := b.seqOf(m.id)
		if err != nil {
			return false, err
		}
		// Exact or an upper bound: either way at or before low means
		// the chunk's snapshot reflects the change.
		if !known || seq > low {
			return false, nil
		}
	}
	if c.Version != 0 && m.version > c.Version {
		return false, nil
	}
	return true, nil
}

// Load returns the state of load id.
func (s *Store) Load(id string) (LoadState, bool, error) {
	s.mu.Lock()
	st, ok := s.loads[id]
	s.mu.Unlock()
	return st, ok, nil
}

// Loads returns the state of every load, by table then first seq.
func (s *Store) Loads() []LoadState {
	s.mu.Lock()
	out := make([]LoadState, 0, len(s.loads))
	for _, st := range s.loads {
		out = append(out, st)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b LoadState) int {
		if a.Table != b.Table {
			if a.Table < b.Table {
				return -1
			}
			return 1
		}
		switch {
		case a.FirstSeq < b.FirstSeq:
			return -1
		case a.FirstSeq > b.FirstSeq:
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// loadLoads reads the load states at open.
func (s *Store) loadLoads() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLoad}, UpperBound: []byte{prefixLoad + 1}})
	if err != nil {
		return fmt.Errorf("store: reading loads: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		var st LoadState
		if err := decodeRecord(it.Value(), &st); err != nil {
			return fmt.Errorf("store: load %q: %w", it.Key()[1:], err)
		}
		s.loads[st.ID] = st
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: reading loads: %w", err)
	}
	return nil
}

// writeLoads adds the work's load states to its Pebble batch.
func (w *commitWork) writeLoads() error {
	for id, st := range w.loads {
		v, err := encodeRecord(st)
		if err != nil {
			return fmt.Errorf("store: encoding load %q: %w", id, err)
		}
		if err := w.b.Set(loadKey(id), v, nil); err != nil {
			return fmt.Errorf("store: recording load %q: %w", id, err)
		}
	}
	return nil
}

// trimMarks removes the id marks no row lookup needs exactly any more:
// those wholly before change id cut (the first kept by the change log),
// keeping the record that holds cut.
func (s *Store) trimMarks(cut uint64) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixMark}, UpperBound: []byte{prefixMark + 1}})
	if err != nil {
		return fmt.Errorf("store: trimming change id marks: %w", err)
	}
	ok := it.SeekLT(appendMarkKey(nil, cut+1))
	var end []byte
	if ok {
		end = slices.Clone(it.Key())
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: trimming change id marks: %w", err)
	}
	if end == nil {
		return nil
	}
	if err := s.db.DeleteRange([]byte{prefixMark}, end, s.wo); err != nil {
		return fmt.Errorf("store: trimming change id marks before %d: %w", cut, err)
	}
	return nil
}
