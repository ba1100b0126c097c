package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ferrysync/ferry/format"
)

// Batch accumulates applied frames and commits them, with the positions they
// move, atomically. Only one Batch may be open at a time (the store has one
// writer); it is not safe for concurrent use.
//
// Batch does not decide what to apply: its caller checks each frame against
// Position and hands over only the next one. Batch checks that it does (a
// frame must start where the source's position ends, or open a segment
// after it) and refuses anything else, so a bug upstream cannot apply a
// frame twice.
type Batch struct {
	s        *Store
	b        *pebble.Batch
	next     uint64 // next change id
	pos      map[string]SourcePosition
	dirty    map[string]bool
	cursor   StreamCursor
	cursorOK bool
	changes  int
	txs      int
	bytes    int64
	now      int64
	key, val []byte

	// Row writes are buffered and written sorted by key at commit, the last
	// write of each key only: Pebble inserts sorted keys into its memtable
	// far faster than random ones (the skiplist search starts from the
	// previous insert), and only the last write of a key in one atomic batch
	// is ever visible.
	rowBuf []byte
	rows   []rowOp
	rowTmp []rowOp // scratch for sortRows

	// The change log entry being filled (see changelog.go).
	entry    logEntry
	entryOK  bool
	entryBuf []byte
}

// rowOp is a buffered row write, by offsets into rowBuf (which moves as it
// grows); small, so that sorting moves little. vend < 0 marks a delete.
type rowOp struct {
	pfx              uint64 // 8 key bytes after the batch's common prefix, for fast compares
	koff, kend, vend int32
	seq              int32
}

// NewBatch starts a batch.
func (s *Store) NewBatch() *Batch {
	s.mu.Lock()
	next := s.lastChange + 1
	s.mu.Unlock()
	return &Batch{s: s, b: s.db.NewBatch(), next: next, pos: map[string]SourcePosition{}, dirty: map[string]bool{}, now: time.Now().UnixNano()}
}

// Position returns a source's position including what this batch applied.
func (b *Batch) Position(source string) SourcePosition {
	if p, ok := b.pos[source]; ok {
		return p
	}
	return b.s.Position(source)
}

// ErrNotNext means a frame was handed to a Batch that does not start at its
// source's position: applying it would skip or repeat data.
var ErrNotNext = errors.New("store: frame is not the next one of its source")

func (b *Batch) advance(source string, seg uint64, off, end int64, streamSeq uint64, t int64) (*SourcePosition, error) {
	p := b.Position(source)
	if seg != p.Segment || off != p.Offset {
		if seg <= p.Segment {
			return nil, fmt.Errorf("%w: source %q at %d:%d, frame at %d:%d", ErrNotNext, source, p.Segment, p.Offset, seg, off)
		}
	}
	if end <= off {
		return nil, fmt.Errorf("%w: source %q: empty frame at %d:%d", ErrNotNext, source, seg, off)
	}
	if seg == p.Segment && p.Sealed {
		return nil, fmt.Errorf("%w: source %q: frame at %d:%d after the segment's seal", ErrNotNext, source, seg, off)
	}
	p.Segment, p.Offset, p.StreamSeq, p.Sealed = seg, end, streamSeq, false
	if t > p.AliveAt {
		p.AliveAt = t
	}
	b.pos[source] = p
	b.dirty[source] = true
	q := b.pos[source]
	return &q, nil
}

// ApplyTx applies the transaction whose frame spans [off, end) of segment
// seg of source, read from the message with stream sequence streamSeq: every
// change updates or deletes its row and is appended to the change log. frame
// is the frame's bytes (header included), which the change log keeps; tx is
// its decoded form.
func (b *Batch) ApplyTx(source string, seg uint64, off, end int64, streamSeq uint64, tx *format.Tx, frame []byte) error {
	if int64(len(frame)) != end-off {
		return fmt.Errorf("store: frame of %d bytes for range [%d, %d)", len(frame), off, end)
	}
	p, err := b.advance(source, seg, off, end, streamSeq, tx.CommitTime)
	if err != nil {
		return err
	}
	if err := b.logFrame(source, seg, off, len(tx.Changes), frame); err != nil {
		return err
	}
	v := Version{Source: source, Segment: seg, Offset: off}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		v.Index = i
		id := b.next
		b.next++
		start := len(b.rowBuf)
		b.rowBuf = appendRowKey(b.rowBuf, c.Table, c.Key)
		op := rowOp{koff: int32(start), kend: int32(len(b.rowBuf)), vend: -1, seq: int32(len(b.rows))}
		if c.Op != format.OpDelete {
			b.rowBuf = appendRow(b.rowBuf, c, &v, tx.CommitTime, id)
			op.vend = int32(len(b.rowBuf))
		}
		b.rows = append(b.rows, op)
	}
	p.LastCommit = tx.CommitTime
	p.Transactions++
	p.Changes += uint64(len(tx.Changes))
	b.pos[source] = *p
	b.changes += len(tx.Changes)
	b.txs++
	b.bytes += end - off
	return nil
}

// logFrame adds a frame to the change log entry being filled, writing the
// entry out first if the frame cannot join it.
func (b *Batch) logFrame(source string, seg uint64, off int64, changes int, frame []byte) error {
	if b.entryOK && (b.entry.source != source || b.entry.segment != seg || len(b.entry.raw)+len(frame) > maxEntryRaw) {
		if err := b.flushEntry(); err != nil {
			return err
		}
	}
	if !b.entryOK {
		b.entry = logEntry{first: b.next, applied: b.now, source: source, segment: seg,
			offsets: b.entry.offsets[:0], raw: b.entry.raw[:0]}
		b.entryOK = true
	}
	b.entry.offsets = append(b.entry.offsets, off)
	b.entry.raw = append(b.entry.raw, frame...)
	b.entry.changes += changes
	return nil
}

func (b *Batch) flushEntry() error {
	if !b.entryOK {
		return nil
	}
	b.entryOK = false
	if b.entry.changes == 0 {
		return nil
	}
	b.key = appendChangeKey(b.key[:0], b.entry.first)
	b.entryBuf = appendEntry(b.entryBuf[:0], &b.entry)
	if err := b.b.Set(b.key, b.entryBuf, nil); err != nil {
		return fmt.Errorf("store: appending to the change log: %w", err)
	}
	return nil
}

// Advance moves a source past a frame that changes no rows (a heartbeat or a
// seal, or a skippable frame type), t being its time (0 if none); seal says
// it is the segment's seal frame.
func (b *Batch) Advance(source string, seg uint64, off, end int64, streamSeq uint64, t int64, seal bool) error {
	p, err := b.advance(source, seg, off, end, streamSeq, t)
	if err != nil {
		return err
	}
	p.Sealed = seal
	b.pos[source] = *p
	b.bytes += end - off
	return nil
}

// SetCursor records the stream cursor in the batch.
func (b *Batch) SetCursor(c StreamCursor) {
	b.cursor, b.cursorOK = c, true
}

// Changes, Transactions and Bytes count what the batch applied so far.
func (b *Batch) Changes() int      { return b.changes }
func (b *Batch) Transactions() int { return b.txs }
func (b *Batch) Bytes() int64      { return b.bytes }

// Size returns the batch's size so far, in bytes.
func (b *Batch) Size() int {
	n := b.b.Len() + len(b.rowBuf)
	if b.entryOK {
		n += len(b.entry.raw)
	}
	return n
}

// Empty reports whether the batch holds nothing to commit.
func (b *Batch) Empty() bool { return len(b.dirty) == 0 && !b.cursorOK }

// writeRows writes the buffered row writes to the Pebble batch sorted by
// key, the last write of each key only.
func (b *Batch) writeRows() error {
	buf := b.rowBuf
	key := func(r rowOp) []byte { return buf[r.koff:r.kend] }
	if len(b.rows) == 0 {
		return nil
	}
	// Keys of one table share a prefix: sort by the 8 bytes after it as an
	// integer first (sortRows), by the full keys only on a tie.
	common := key(b.rows[0])
	for _, r := range b.rows[1:] {
		k := key(r)
		n := 0
		for n < len(common) && n < len(k) && common[n] == k[n] {
			n++
		}
		common = common[:n]
	}
	cl := len(common)
	for i := range b.rows {
		var w [8]byte
		copy(w[:], key(b.rows[i])[cl:])
		b.rows[i].pfx = binary.BigEndian.Uint64(w[:])
	}
	b.rows, b.rowTmp = sortRows(b.rows, b.rowTmp, func(r rowOp) []byte { return key(r)[cl:] })
	for i, r := range b.rows {
		if i+1 < len(b.rows) && bytes.Equal(key(r), key(b.rows[i+1])) {
			continue // a later write of the same key wins
		}
		var err error
		if r.vend < 0 {
			err = b.b.Delete(key(r), nil)
		} else {
			err = b.b.Set(key(r), buf[r.kend:r.vend], nil)
		}
		if err != nil {
			return fmt.Errorf("store: writing row: %w", err)
		}
	}
	return nil
}

// sortRows sorts rows, which are in seq order, by key and then seq: a stable
// LSD radix sort on pfx (a byte at a time, skipping bytes that are the same in
// every row), then a stable sort of each run of equal pfx by the rest of the
// key (rest returns a row's key after the common prefix). A comparison sort
// of the whole batch cost ~350 ns per change; this is a few passes over it.
// It returns the sorted rows and the scratch slice, both to be reused.
func sortRows(rows, tmp []rowOp, rest func(rowOp) []byte) (sorted, scratch []rowOp) {
	if len(rows) < 2 {
		return rows, tmp
	}
	if cap(tmp) < len(rows) {
		tmp = make([]rowOp, len(rows))
	}
	tmp = tmp[:len(rows)]
	src, dst := rows, tmp
	for shift := uint(0); shift < 64; shift += 8 {
		var count [256]int
		for i := range src {
			count[byte(src[i].pfx>>shift)]++
		}
		if count[byte(src[0].pfx>>shift)] == len(src) {
			continue // every row has the same byte here
		}
		sum := 0
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, r := range src {
			d := byte(r.pfx >> shift)
			dst[count[d]] = r
			count[d]++
		}
		src, dst = dst, src
	}
	// Rows with equal pfx may still differ after those 8 bytes (or in
	// length: pfx is zero-padded); they are in seq order, so a stable sort
	// by key keeps the last write of a key last.
	for i := 0; i < len(src); {
		j := i + 1
		for j < len(src) && src[j].pfx == src[i].pfx {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(src[i:j], func(x, y rowOp) int { return bytes.Compare(rest(x), rest(y)) })
		}
		i = j
	}
	return src, dst
}

// Commit writes the batch: data, positions, last change id and cursor in one
// atomic Pebble commit. The Batch can be used again afterwards.
func (b *Batch) Commit() error {
	if b.Empty() {
		return nil
	}
	if err := b.flushEntry(); err != nil {
		return err
	}
	if err := b.writeRows(); err != nil {
		return err
	}
	for src := range b.dirty {
		p := b.pos[src]
		b.val = encodePos(b.val[:0], &p)
		if err := b.b.Set(posKey(src), b.val, nil); err != nil {
			return fmt.Errorf("store: setting position: %w", err)
		}
	}
	last := b.next - 1
	if b.changes > 0 {
		if err := b.b.Set(keyLastChange, leAppend(nil, last), nil); err != nil {
			return fmt.Errorf("store: setting last change id: %w", err)
		}
	}
	if b.cursorOK {
		if err := b.b.Set(keyStream, encodeCursor(b.cursor), nil); err != nil {
			return fmt.Errorf("store: setting stream cursor: %w", err)
		}
	}
	if err := b.b.Commit(b.s.wo); err != nil {
		return fmt.Errorf("store: committing %d changes: %w", b.changes, err)
	}
	s := b.s
	s.committed()
	s.mu.Lock()
	for src := range b.dirty {
		s.positions[src] = b.pos[src]
	}
	if b.changes > 0 {
		if s.firstChange > s.lastChange {
			s.firstChange = s.lastChange + 1
		}
		s.lastChange = last
	}
	if b.cursorOK {
		s.cursor = b.cursor
	}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	b.reset()
	return nil
}

// Discard drops what the batch holds.
func (b *Batch) Discard() {
	b.s.mu.Lock()
	b.next = b.s.lastChange + 1
	b.s.mu.Unlock()
	b.reset()
}

func (b *Batch) reset() {
	b.rowBuf, b.rows = b.rowBuf[:0], b.rows[:0]
	b.entryOK = false
	b.b.Close()
	b.b = b.s.db.NewBatch()
	clear(b.pos)
	clear(b.dirty)
	b.cursorOK = false
	b.changes, b.txs, b.bytes = 0, 0, 0
	b.now = time.Now().UnixNano()
}

// Close releases the batch without committing.
func (b *Batch) Close() {
	b.b.Close()
}
