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
	"github.com/ferrysync/ferry/format/wire"
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
//
// Commits are pipelined: CommitAsync builds the Pebble batch (sorting rows,
// appending the change log), then hands it to a commit goroutine that
// applies it to Pebble, and the batch fills a second buffer meanwhile, so
// decoding and preparing the next messages overlaps applying the last ones. At most one commit is in flight; Position
// and change ids already count it. Commit is CommitAsync and Wait.
type Batch struct {
	s        *Store
	next     uint64 // next change id
	pos      map[string]SourcePosition
	dirty    map[string]bool
	cursor   StreamCursor
	cursorOK bool
	changes  int
	txs      int
	bytes    int64

	body pendingBody // the message whose frames are being applied, if whole

	w      *commitWork // being filled
	spare  *commitWork // free for the next CommitAsync (nil: not made yet)
	flying *commitWork // handed to the commit goroutine
	done   chan error  // its result
	err    error       // a failed commit: the batch refuses everything after it

	// The row guard (guard.go): the sources that have written each table
	// (more than one: its every change is checked; tableWriters), the
	// scratch key and source of a lookup, and the rate limit of the
	// cross-source warning.
	tables      map[string][]string
	tver        map[string]tableVer // each table's highest version (tables.go)
	keyBuf      []byte
	srcBuf      []byte
	crossWarned time.Time
	crossQuiet  int
	purged      time.Time // last look for expired tombstones
	cmdPurged   time.Time // last look for expired command records

	// Parked transactions (parked.go): parks and resolutions not yet in
	// Pebble, by park key, tagged with the generation of the work that
	// writes them (gen: the work being filled; flyingGen: the one in
	// flight); the transaction being resolved.
	pending   map[string]pendingPark
	gen       uint64
	flyingGen uint64
	parkTx    format.Tx

	// Loads (loads.go): the stream seq of the message being applied, the
	// load states this batch changed, and the bulk path's scratch.
	seq       uint64
	loads     map[string]LoadState
	loadDirty bool
	ing       pendingIngest
	bulkTmp   []rowOp
	loadOrder []int32
	loadOK    []bool
	valBuf    []byte

	// OnCommit, if set, is called (on the commit goroutine) with the time
	// each commit took.
	OnCommit func(time.Duration)
}

// commitWork is what one commit writes, filled by the Batch and written by
// the commit goroutine; its buffers are reused commit after commit.
type commitWork struct {
	b *pebble.Batch

	// Row writes are buffered and written sorted by key at commit, the last
	// write of each key only: Pebble inserts sorted keys into its memtable
	// far faster than random ones (the skiplist search starts from the
	// previous insert), and only the last write of a key in one atomic batch
	// is ever visible.
	rowBuf []byte
	rows   []rowOp
	rowTmp []rowOp // scratch for sortRows

	// index maps a row key to its last write in rows, built once the row
	// guard needs a lookup in this work (indexed) and kept up to date
	// from then on.
	index   map[string]int32
	indexed bool

	// Tombstone index entries to delete (purged tombstones), concatenated.
	purge     []byte
	purgeEnds []int
	// Command index entries of the commands whose records go
	// (cmdretention.go), and their ids.
	cmdPurge  []string
	cmdPurged map[string]struct{}

	// Row guard counts, published when the commit is applied: changes
	// skipped as stale, cross-source writes without versions, tombstones
	// written.
	stale, cross, tombs, reads int
	tablePairs                 [][2]string // (table, source) pairs written for the first time
	tverDirty                  map[string]tableVer
	now                        int64 // the commit's time (tombstones are indexed by it)

	// Parked transactions written and removed, the change of each
	// source's parked count, and the outcome counts (parked.go).
	parks                            []kv
	unparks                          [][]byte
	parkCount                        map[string]int64
	unmatched, aborted, committedOut int

	// Change log entries (see changelog.go), the last one still filling;
	// compressed by the commit goroutine.
	entries  []logEntry
	entryOK  bool // the last entry is still open
	entryBuf []byte

	// Set by CommitAsync.
	positions []SourcePosition // of the sources the commit moves
	last      uint64           // last change id (valid if changes > 0)
	changes   int
	cursor    StreamCursor
	cursorOK  bool
	key, val  []byte

	// Loads (loads.go): which messages the change ids came from, the load
	// states to write, the load rows applied.
	marks    []idSeq
	loads    map[string]LoadState
	loadRows int

	// Write-back command outcomes (commands.go), and their ids.
	cmds []cmdRecord
	seen map[string]struct{}
}

// maxRetainedBatch bounds the Pebble batch buffer kept between commits: above
// a consumer batch (8 MiB by default) plus its keys and positions, so the
// usual batch is reused, and an unusual one (a huge transaction) is freed.
const maxRetainedBatch = 32 << 20

// rowOp is a buffered row write, by offsets into rowBuf (which moves as it
// grows); small, so that sorting moves little. vend < 0 marks a delete.
type rowOp struct {
	pfx              uint64 // 8 key bytes after the batch's common prefix, for fast compares
	koff, kend, vend int32
	seq              int32
}

func (s *Store) newWork() *commitWork {
	// The Pebble batch is reset and reused by every commit, its buffer
	// kept: growing a fresh one to a consumer batch's size copied it ~twice
	// (~5% of the apply CPU).
	return &commitWork{b: s.db.NewBatch(pebble.WithMaxRetainedSizeBytes(maxRetainedBatch))}
}

// NewBatch starts a batch.
func (s *Store) NewBatch() *Batch {
	s.mu.Lock()
	next := s.lastChange + 1
	s.mu.Unlock()
	return &Batch{s: s, w: s.newWork(), next: next, pos: map[string]SourcePosition{}, dirty: map[string]bool{}, tables: s.tableWriters(), tver: s.tableVersions()}
}

// Position returns a source's position including what this batch applied
// (committed, in flight or not yet committed).
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
	if b.err != nil {
		return nil, b.err
	}
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
	n, err := b.applyChanges(source, seg, off, tx, frame, false)
	if err != nil {
		return err
	}
	if tx.CommitTime > p.LastCommit {
		p.LastCommit = tx.CommitTime
	}
	p.Transactions++
	p.Changes += uint64(n)
	b.pos[source] = *p
	b.txs++
	b.bytes += end - off
	return nil
}

// applyChanges writes the changes of tx, whose frame is at off in segment
// seg of source, that pass the row guard, and logs the frame with them
// (the others are marked skipped in the log). late says the transaction
// is applied after frames that follow it (a prepared transaction at its
// outcome): every change is then checked. It returns how many it applied.
func (b *Batch) applyChanges(source string, seg uint64, off int64, tx *format.Tx, frame []byte, late bool) (int, error) {
	if err := b.flushIngest(); err != nil {
		return 0, err
	}
	if err := b.logFrame(source, seg, off, late, frame); err != nil {
		return 0, err
	}
	var table string
	var tv tableVer
	multi := false
	v := Version{Source: source, Segment: seg, Offset: off}
	w := b.w
	e := &w.entries[len(w.entries)-1]
	frameIdx := int32(len(e.offsets) - 1)
	applied := 0
	for i := range tx.Changes {
		c := &tx.Changes[i]
		v.Index = i
		if i == 0 || c.Table != table {
			table, multi = c.Table, b.tableWriter(c.Table, source)
			tv = b.tver[table]
		}
		if (late || multi || c.Version != 0) && !b.aboveTable(tv, c.Version) {
			w.reads++
			b.keyBuf = b.s.rk.appendRow(b.keyBuf[:0], c.Table, c.Key)
			m, err := b.current(b.keyBuf)
			if err != nil {
				return 0, err
			}
			switch judge(c, &v, &m) {
			case skipStale:
				w.stale++
				e.skips = append(e.skips, skipRef{frame: frameIdx, index: int32(i)})
				continue
			case applyCross:
				w.cross++
				b.warnCross(c, source, &m)
			}
		}
		id := b.takeID()
		start := len(w.rowBuf)
		w.rowBuf = b.s.rk.appendRow(w.rowBuf, c.Table, c.Key)
		kend := len(w.rowBuf)
		w.rowBuf = appendRow(w.rowBuf, c, &v, tx.CommitTime, id)
		w.addRow(rowOp{koff: int32(start), kend: int32(kend), vend: int32(len(w.rowBuf)), seq: int32(len(w.rows))})
		b.noteTableVer(table, &tv, c.Version)
		applied++
	}
	e.changes += applied
	b.changes += applied
	if tx.Command != "" {
		// The legacy carried the command out (here, or at the prepared
		// transaction's outcome): its outcome goes in the same batch.
		first := uint64(0)
		if applied > 0 {
			first = b.next - uint64(applied)
		}
		if err := b.commandApplied(source, seg, off, first, tx); err != nil {
			return 0, err
		}
	}
	return applied, nil
}

// addRow buffers a row write.
func (w *commitWork) addRow(r rowOp) {
	if w.indexed {
		w.index[string(w.rowBuf[r.koff:r.kend])] = int32(len(w.rows))
	}
	w.rows = append(w.rows, r)
}

// pendingBody is a message announced by LogBody.
type pendingBody struct {
	ok     bool
	open   bool // its entry is the last one of the work being filled
	source string
	seg    uint64
	from   int64
	rawLen int
	codec  wire.Codec
	body   []byte
}

// LogBody announces that the frames about to be applied from source's
// segment seg, from offset from on, are all the frames of one message, whose
// body (compressed with codec) inflates to their rawLen bytes: the change log
// then keeps body as it is (one entry per message) instead of compressing
// the transaction frames again. body is copied when a frame uses it.
func (b *Batch) LogBody(source string, seg uint64, from int64, rawLen int, codec wire.Codec, body []byte) {
	b.body = pendingBody{ok: true, source: source, seg: seg, from: from, rawLen: rawLen, codec: codec, body: body}
}

// newEntry appends an entry to the work being filled, reusing the buffers
// of an entry of an earlier commit.
func (w *commitWork) newEntry() *logEntry {
	if len(w.entries) < cap(w.entries) {
		w.entries = w.entries[:len(w.entries)+1]
	} else {
		w.entries = append(w.entries, logEntry{})
	}
	e := &w.entries[len(w.entries)-1]
	*e = logEntry{offsets: e.offsets[:0], raw: e.raw[:0], body: e.body[:0], skips: e.skips[:0]}
	return e
}

// logFrame adds a frame to the change log entry being filled, starting a
// new entry if the frame cannot join it; its changes are counted by the
// caller. A frame applied late (a prepared transaction at its outcome) is
// logged on its own, as raw bytes.
func (b *Batch) logFrame(source string, seg uint64, off int64, late bool, frame []byte) error {
	w := b.w
	if late {
		b.body.open = false // the message's next frames start a new entry
		e := w.newEntry()
		e.first, e.source, e.segment = b.next, source, seg
		e.offsets = append(e.offsets, off)
		e.raw = append(e.raw, frame...)
		w.entryOK = false
		return nil
	}
	if p := &b.body; p.ok && p.source == source && p.seg == seg && off >= p.from && off < p.from+int64(p.rawLen) {
		if !p.open {
			e := w.newEntry()
			e.first, e.source, e.segment = b.next, source, seg
			e.hasBody, e.from, e.rawLen, e.codec = true, p.from, p.rawLen, p.codec
			e.body = append(e.body, p.body...)
			w.entryOK, p.open = false, true
		}
		e := &w.entries[len(w.entries)-1]
		e.offsets = append(e.offsets, off)
		return nil
	}
	var e *logEntry
	if w.entryOK {
		e = &w.entries[len(w.entries)-1]
		if e.source != source || e.segment != seg || len(e.raw)+len(frame) > maxEntryRaw {
			e = nil
		}
	}
	if e == nil {
		e = w.newEntry()
		e.first, e.source, e.segment = b.next, source, seg
		w.entryOK = true
	}
	e.offsets = append(e.offsets, off)
	e.raw = append(e.raw, frame...)
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

// Size returns the batch's size so far, in bytes: its row writes and the
// raw frames it logs (a message logged as its compressed body counts as
// its raw length), a measure of what the commit holds and writes.
func (b *Batch) Size() int {
	n := len(b.w.rowBuf)
	for i := range b.w.entries {
		n += len(b.w.entries[i].raw) + b.w.entries[i].rawLen
	}
	return n
}

// Empty reports whether the batch holds nothing to commit.
func (b *Batch) Empty() bool {
	return len(b.dirty) == 0 && !b.cursorOK && len(b.w.cmds) == 0 && len(b.w.loads) == 0
}

// writeRows writes the buffered row writes to the Pebble batch sorted by
// key, the last write of each key only.
func (w *commitWork) writeRows() error {
	buf := w.rowBuf
	key := func(r rowOp) []byte { return buf[r.koff:r.kend] }
	if len(w.rows) == 0 {
		return nil
	}
	// Keys of one table share a prefix: sort by the 8 bytes after it as an
	// integer first (sortRows), by the full keys only on a tie.
	common := key(w.rows[0])
	for _, r := range w.rows[1:] {
		k := key(r)
		n := 0
		for n < len(common) && n < len(k) && common[n] == k[n] {
			n++
		}
		common = common[:n]
	}
	cl := len(common)
	for i := range w.rows {
		var pfx [8]byte
		copy(pfx[:], key(w.rows[i])[cl:])
		w.rows[i].pfx = binary.BigEndian.Uint64(pfx[:])
	}
	w.rows, w.rowTmp = sortRows(w.rows, w.rowTmp, func(r rowOp) []byte { return key(r)[cl:] })
	for i, r := range w.rows {
		if i+1 < len(w.rows) && bytes.Equal(key(r), key(w.rows[i+1])) {
			continue // a later write of the same key wins
		}
		var err error
		if r.vend < 0 {
			err = w.b.Delete(key(r), nil)
		} else {
			err = w.b.Set(key(r), buf[r.kend:r.vend], nil)
			if err == nil && format.Op(buf[r.kend+1]) == format.OpDelete {
				err = w.indexTomb(key(r), buf[r.kend:r.vend])
			}
		}
		if err != nil {
			return fmt.Errorf("store: writing row: %w", err)
		}
	}
	return nil
}

// indexTomb indexes a tombstone by the commit's time, for its purge.
func (w *commitWork) indexTomb(key, rec []byte) error {
	m, err := parseRowMeta(rec)
	if err != nil {
		return err
	}
	w.key = appendTombKey(w.key[:0], w.now, key)
	w.val = leAppend(w.val[:0], m.id)
	w.tombs++
	return w.b.Set(w.key, w.val, nil)
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
// atomic Pebble commit, and waits for it (and any commit in flight). The Batch
// can be used again afterwards.
func (b *Batch) Commit() error {
	if err := b.CommitAsync(); err != nil {
		return err
	}
	return b.Wait()
}

// CommitAsync prepares what the batch holds for Pebble (while the previous
// commit, if any, completes), hands it to a commit goroutine and returns: the
// batch can be filled again at once. The commit's outcome is reported by Wait, or by the next
// CommitAsync or Commit; after a failed commit the batch refuses everything.
func (b *Batch) CommitAsync() error {
	if b.err != nil {
		return b.err
	}
	if b.Empty() {
		return nil
	}
	// Not on a full disk (diskfull.go): the commit could stall in Pebble
	// for good. The batch is kept as it is.
	if err := b.s.space.check(); err != nil {
		return err
	}
	// Load rows waiting to be ingested go in before the commit that holds
	// their position (ingest.go).
	if err := b.flushIngest(); err != nil {
		return err
	}
	if err := b.dropHeldOutcomes(); err != nil {
		return err
	}
	w := b.w
	w.entryOK, b.body.open = false, false
	w.positions = w.positions[:0]
	for src := range b.dirty {
		w.positions = append(w.positions, b.pos[src])
	}
	w.last, w.changes = b.next-1, b.changes
	w.cursor, w.cursorOK = b.cursor, b.cursorOK
	// A change's applied time is its commit's: every change in the batch
	// has arrived by now, so it is never before the change's own commit
	// time (the batch's start was, for changes that arrived later), and
	// --keep-age trims by it.
	now := time.Now()
	for i := range w.entries {
		w.entries[i].applied = now.UnixNano()
	}
	w.now = now.UnixNano()
	// Build the Pebble batch here, while the commit in flight (if any)
	// applies the previous one: the commit goroutine is left with
	// Pebble's memtable inserts alone, the longest stage.
	start := time.Now()
	perr := w.prepare(b.s)
	if perr == nil && b.s.space.commit.Load() != nil {
		b.s.space.commit.Store(nil)
	}
	if err := b.Wait(); err != nil {
		return err
	}
	if perr != nil {
		b.err = perr
		return perr
	}
	done := make(chan error, 1)
	s, onCommit := b.s, b.OnCommit
	go func() {
		err := w.apply(s)
		if err == nil && onCommit != nil {
			onCommit(time.Since(start))
		}
		done <- err
	}()
	b.flying, b.done = w, done
	b.flyingGen = b.gen
	b.gen++
	if b.spare == nil {
		b.spare = b.s.newWork()
	}
	b.w, b.spare = b.spare, nil
	clear(b.dirty)
	b.cursorOK = false
	b.changes, b.txs, b.bytes = 0, 0, 0
	// The new work is empty: expired tombstones are purged at its start,
	// so that every later write of the batch comes after the purge.
	if err := b.purgeTombstones(now); err != nil {
		b.err = err
		return err
	}
	if err := b.purgeCommands(now); err != nil {
		b.err = err
		return err
	}
	return nil
}

// Wait waits for the commit in flight, if any, and returns its error.
func (b *Batch) Wait() error {
	if b.done == nil {
		return b.err
	}
	err := <-b.done
	if err == nil {
		b.landed(b.flyingGen)
	}
	b.flying.reset()
	b.spare, b.flying, b.done = b.flying, nil, nil
	if err != nil && b.err == nil {
		b.err = err
	}
	return b.err
}

// prepare appends w's change log entries to the log files and builds its
// Pebble batch: index records, rows, positions, last change id, cursor.
func (w *commitWork) prepare(s *Store) error {
	if err := w.writeLog(s); err != nil {
		return err
	}
	if err := w.writeRows(); err != nil {
		return err
	}
	if err := w.writeCommandPurge(); err != nil {
		return err
	}
	if err := w.writeCommands(); err != nil {
		return err
	}
	if err := w.writeMarks(); err != nil {
		return err
	}
	if err := w.writeLoads(); err != nil {
		return err
	}
	for i, start := 0, 0; i < len(w.purgeEnds); i++ {
		if err := w.b.Delete(w.purge[start:w.purgeEnds[i]], nil); err != nil {
			return fmt.Errorf("store: purging a tombstone: %w", err)
		}
		start = w.purgeEnds[i]
	}
	for _, p := range w.tablePairs {
		if err := w.b.Set(tableWriterKey(p[0], p[1]), nil, nil); err != nil {
			return fmt.Errorf("store: recording a table's writer: %w", err)
		}
	}
	for t, v := range w.tverDirty {
		var flags byte
		if v.unversioned {
			flags = 1
		}
		w.val = append(binary.LittleEndian.AppendUint64(w.val[:0], v.max), flags)
		if err := w.b.Set(tableVerKey(t), w.val, nil); err != nil {
			return fmt.Errorf("store: recording a table's highest version: %w", err)
		}
	}
	// Parks before resolutions. A transaction parked and resolved in the
	// same work has its park cancelled (v nil, Batch.Resolve) and no
	// removal.
	for _, p := range w.parks {
		if p.v == nil {
			continue
		}
		if err := w.b.Set(p.k, p.v, nil); err != nil {
			return fmt.Errorf("store: parking a prepared transaction: %w", err)
		}
	}
	for _, k := range w.unparks {
		if err := w.b.Delete(k, nil); err != nil {
			return fmt.Errorf("store: removing a parked transaction: %w", err)
		}
	}
	for i := range w.positions {
		p := &w.positions[i]
		w.val = encodePos(w.val[:0], p)
		if err := w.b.Set(posKey(p.Source), w.val, nil); err != nil {
			return fmt.Errorf("store: setting position: %w", err)
		}
	}
	if w.changes > 0 {
		if err := w.b.Set(keyLastChange, leAppend(nil, w.last), nil); err != nil {
			return fmt.Errorf("store: setting last change id: %w", err)
		}
	}
	if w.cursorOK {
		if err := w.b.Set(keyStream, encodeCursor(w.cursor), nil); err != nil {
			return fmt.Errorf("store: setting stream cursor: %w", err)
		}
	}
	return nil
}

// apply commits w's Pebble batch (on the commit goroutine) and publishes
// what it moved.
func (w *commitWork) apply(s *Store) error {
	if !s.noWAL && len(w.entries) > 0 {
		// Every commit is durable at once: so must be the log it indexes.
		if err := s.logs.sync(); err != nil {
			return err
		}
	}
	if err := w.b.Commit(s.wo); err != nil {
		return fmt.Errorf("store: committing %d changes: %w", w.changes, err)
	}
	s.committed()
	s.stale.Add(uint64(w.stale))
	s.cross.Add(uint64(w.cross))
	s.reads.Add(uint64(w.reads))
	s.tombstones.Add(int64(w.tombs - len(w.purgeEnds)))
	s.cmdPurgedN.Add(uint64(len(w.cmdPurge)))
	s.outCommitted.Add(uint64(w.committedOut))
	s.outAborted.Add(uint64(w.aborted))
	s.outUnmatched.Add(uint64(w.unmatched))
	s.mu.Lock()
	for _, p := range w.tablePairs {
		s.tables[p[0]] = append(s.tables[p[0]], p[1])
	}
	for t, v := range w.tverDirty {
		s.tver[t] = v
	}
	for src, d := range w.parkCount {
		s.parked[src] += d
	}
	for i := range w.positions {
		s.positions[w.positions[i].Source] = w.positions[i]
	}
	for id, st := range w.loads {
		s.loads[id] = st
	}
	if w.changes > 0 {
		if s.firstChange > s.lastChange {
			s.firstChange = s.lastChange + 1
		}
		s.lastChange = w.last
	}
	if w.cursorOK {
		s.cursor = w.cursor
	}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	s.outcomesCommitted(w.cmds)
	return nil
}

// writeLog appends the batch's change log entries to the log files, in one
// write, and their index records to the Pebble batch (logfile.go).
func (w *commitWork) writeLog(s *Store) error {
	n := 0
	for i := range w.entries {
		if w.entries[i].changes > 0 {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	w.entryBuf = w.entryBuf[:0]
	var file uint64
	var base int64
	for i := range w.entries {
		e := &w.entries[i]
		if e.changes == 0 {
			continue
		}
		if len(w.entryBuf) == 0 {
			var err error
			if file, base, err = s.logs.next(e.first); err != nil {
				return err
			}
		}
		start := len(w.entryBuf)
		w.entryBuf = appendLogRecord(w.entryBuf, e)
		x := indexRecord{file: file, off: base + int64(start), length: uint32(len(w.entryBuf) - start - logRecordHeader),
			changes: uint32(e.changes), applied: e.applied}
		w.key = appendChangeKey(w.key[:0], e.first)
		w.val = appendIndex(w.val[:0], &x)
		if err := w.b.Set(w.key, w.val, nil); err != nil {
			return fmt.Errorf("store: indexing the change log: %w", err)
		}
	}
	return s.logs.write(w.entryBuf)
}

func (w *commitWork) reset() {
	w.rowBuf, w.rows = w.rowBuf[:0], w.rows[:0]
	if w.indexed {
		clear(w.index)
		w.indexed = false
	}
	w.purge, w.purgeEnds = w.purge[:0], w.purgeEnds[:0]
	w.cmdPurge = w.cmdPurge[:0]
	clear(w.cmdPurged)
	w.stale, w.cross, w.tombs, w.reads = 0, 0, 0, 0
	w.tablePairs = w.tablePairs[:0]
	clear(w.tverDirty)
	clear(w.parks) // drop the references to the frames
	w.parks, w.unparks = w.parks[:0], w.unparks[:0]
	clear(w.parkCount)
	w.unmatched, w.aborted, w.committedOut = 0, 0, 0
	w.entries, w.entryOK = w.entries[:0], false
	w.cmds = w.cmds[:0]
	clear(w.seen)
	w.marks = w.marks[:0]
	clear(w.loads)
	w.loadRows = 0
	w.b.Reset()
}

// Discard drops what the batch holds (a commit in flight completes first).
func (b *Batch) Discard() {
	b.Wait()
	b.w.reset()
	b.ing.reset(b.s.fs)
	clear(b.pending)
	clear(b.loads)
	b.tables = b.s.tableWriters() // what this batch added is gone
	b.tver = b.s.tableVersions()
	b.body = pendingBody{}
	clear(b.pos)
	clear(b.dirty)
	b.cursorOK = false
	b.changes, b.txs, b.bytes = 0, 0, 0
	b.s.mu.Lock()
	b.next = b.s.lastChange + 1
	b.s.mu.Unlock()
}

// Close waits for a commit in flight and releases the batch without
// committing what it holds.
func (b *Batch) Close() {
	b.Wait()
	b.ing.reset(b.s.fs)
	b.w.b.Close()
	if b.spare != nil {
		b.spare.b.Close()
	}
}
