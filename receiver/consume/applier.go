package consume

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/store"
)

// Message is one stream message as the applier needs it.
type Message struct {
	Subject   string
	Header    map[string][]string
	Body      []byte
	StreamSeq uint64
}

// Applier turns stream messages into store batches, exactly once. It is the
// consumer without the network: feed it messages in stream order with
// Handle and call Commit when the input pauses or the batch is big enough.
// It is not safe for concurrent use, except Status.
//
// For every message it decides, from the source's applied position alone
// (never from stream sequence numbers), whether the message's frames were
// already applied (skipped, frame by frame), continue exactly where the
// source stands (applied), or leave a gap (the source stops). Every frame's
// CRC is checked before anything of the message is applied, and every
// transaction decoded too unless the message is too big to decode at once
// (applyRange), so a corrupt message stops its source without any effect
// on the store. What decoding holds is bounded by configuration, never by
// what a message claims (SetMaxTxBytes).
type Applier struct {
	st     *store.Store
	dec    *wire.Decompressor
	m      *Metrics
	log    *slog.Logger
	prefix string // subject prefix with its trailing dot

	batch   *store.Batch
	raw     []byte
	txs     []format.Tx
	rejs    []format.Rejection // rejection frames of the chunk (write-back)
	again   []format.Applied   // applied frames of the chunk (write-back)
	outs    []format.Outcome   // outcome frames of the chunk
	frames  []frameRef
	lastSeq uint64
	lastID  string // MessageID of the message at lastSeq ("" if not known)
	created int64
	counts  map[string]*counts
	handed  store.StreamCursor // the cursor of the last commit started

	mu      sync.Mutex // guards sources for Status
	sources map[string]*sourceState

	// midChain lets a source with nothing applied start at whatever its
	// first message in the stream is (SetStartMidChain).
	midChain bool

	// gapRescan turns a source's first gap at an applied position into a
	// request to read the stream again (SetRescanOnGap): rescan is that
	// request, rescanned where each source stood when it was made.
	gapRescan bool
	rescan    *SourceError
	rescanned map[string]format.Position

	// curCommit is the first commit time of the message being handled.
	curCommit int64

	// Load chunks (loads.go): their decoder and rows.
	ldec *load.Decoder
	ltx  format.Tx

	// maxTx bounds one transaction (SetMaxTxBytes); joined counts the
	// bytes held by split frames being joined, every source together,
	// bounded by 2*maxTx.
	maxTx  int64
	joined int64
}

// DefaultMaxTxBytes is the default bound on one transaction's frame and on
// what decoding it may hold (SetMaxTxBytes).
const DefaultMaxTxBytes = 64 << 20

// SetMaxTxBytes bounds what one transaction may cost the receiver (default
// DefaultMaxTxBytes): a frame split over several messages may span at most
// n bytes, and split frames being joined hold at most 2n bytes, all sources
// together. A frame beyond it stops its source (KindLimit) with an error
// saying so; nothing a peer sends can make the receiver hold more.
func (a *Applier) SetMaxTxBytes(n int64) {
	if n <= 0 {
		n = DefaultMaxTxBytes
	}
	a.maxTx = n
}

// SetStartMidChain lets a source with nothing applied start at its first
// message in the stream even when that message does not start the source's
// chain (Prev-End 0): for a stream whose retention dropped the beginning,
// when the receiver is meant to hold only what the stream still has. Off by
// default: such a start is a gap.
func (a *Applier) SetStartMidChain(on bool) { a.midChain = on }

// SetRescanOnGap makes a source's first gap at an applied position a
// request to read the stream again from its start (RescanWanted) instead of
// a stop; a gap met again at the same position stops the source. A broker
// killed after acknowledging messages it had not written out loses them and
// gives their sequence numbers to the next ones: a running consumer, which
// resumes by sequence, is then past the messages that continue a source
// (the shipper re-ships what the stream lost), though the stream holds them.
// Only reading it again finds them; what is applied is skipped by position.
func (a *Applier) SetRescanOnGap(on bool) { a.gapRescan = on }

// RescanWanted returns the gap that asked for the stream to be read again
// from its start (SetRescanOnGap), nil if none: the caller commits, Resets
// the applier to the start and reads again. Until then Handle ignores
// every message.
func (a *Applier) RescanWanted() *SourceError { return a.rescan }

// gap handles a message that does not continue its source.
func (a *Applier) gap(source string, st *sourceState, e *SourceError) {
	if a.gapRescan && st.err == nil { // after a stop, what follows does not continue: no news
		p := a.batch.Position(source)
		at := format.Position{Segment: p.Segment, Offset: p.Offset}
		if last, ok := a.rescanned[source]; !ok || last != at {
			if a.rescanned == nil {
				a.rescanned = map[string]format.Position{}
			}
			a.rescanned[source] = at
			e.Source, e.AppliedSegment, e.AppliedOffset = source, p.Segment, p.Offset
			a.rescan = e
			return
		}
	}
	a.stop(source, st, e)
}

type counts struct{ changes, txs, bytes, skipped int }

type frameRef struct {
	raw      []byte
	typ      format.FrameType
	off, end int64
	tx       int // index into txs for FrameTx, rejs for FrameRejection, outs for FrameOutcome, again for FrameApplied
	t        int64
}

type sourceState struct {
	err     *SourceError
	hold    uint64 // stream seq of the earliest message still needed (0: none)
	lastSeq uint64 // last stream seq seen for the source
	tailSeq uint64 // stream seq of the source's last message in the stream (polled)
	tail    format.Position
	// nextSeq and nextCommit: the first message in the stream after the
	// applied one and its first commit time (polled while behind).
	nextSeq    uint64
	nextCommit int64
	// handled is the end of the last frame handed to the batch (committed
	// or about to be), handledSeq its message, handledAt its time.
	handled    format.Position
	handledSeq uint64
	handledAt  int64
	// stopCommit is the first commit time of the message that stopped the
	// source (0: unknown).
	stopCommit int64
	shipped    format.Position
	torn       int64
	// tornSeg is the last segment whose torn bytes were counted: a message
	// is re-read after restarts and re-ships, its Torn counted once.
	tornSeg uint64

	// A frame split in parts being joined.
	join      []byte
	joinKey   wire.Batch // Segment, From, To, Parts, PrevEnd of the frame
	joinNext  int
	joinValid bool
}

// NewApplier returns an Applier writing to st. prefix is the subject prefix
// ("ferry"): a message's source is also the last token of its subject.
func NewApplier(st *store.Store, dec *wire.Decompressor, m *Metrics, log *slog.Logger, prefix string) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m, _ = NewMetrics(nil)
	}
	cur := st.Cursor()
	a := &Applier{st: st, dec: dec, m: m, log: log, prefix: prefix + ".", batch: st.NewBatch(),
		sources: map[string]*sourceState{}, counts: map[string]*counts{}, lastSeq: cur.Seq, created: cur.Created, handed: cur,
		lastID: cur.CheckID,
		maxTx:  DefaultMaxTxBytes}
	a.batch.OnCommit = func(d time.Duration) { m.CommitTime.Observe(d.Seconds()) }
	return a
}

// Close releases the open batch without committing it.
func (a *Applier) Close() {
	a.batch.Close()
	if a.ldec != nil {
		a.ldec.Close()
	}
}

// Reset discards what is not committed and forgets per-source join and error
// state: the caller is about to re-read the stream from cursor c.
func (a *Applier) Reset(c store.StreamCursor) {
	a.batch.Discard()
	a.handed = a.st.Cursor()
	clear(a.counts)
	a.mu.Lock()
	for _, s := range a.sources {
		*s = sourceState{lastSeq: s.lastSeq, shipped: s.shipped, torn: s.torn}
	}
	a.mu.Unlock()
	a.joined = 0
	a.rescan = nil
	a.lastSeq, a.created, a.lastID = c.Seq, c.Created, ""
	if c.CheckSeq == c.Seq {
		a.lastID = c.CheckID
	}
}

// Recover starts again from what the store holds after a commit failed
// (a full disk): the failed batch is dropped and a new one opened, and the
// caller re-reads the stream from the store's cursor, as a restarted
// receiver would.
func (a *Applier) Recover() store.StreamCursor {
	a.batch.Close()
	a.batch = a.st.NewBatch()
	a.batch.OnCommit = func(d time.Duration) { a.m.CommitTime.Observe(d.Seconds()) }
	c := a.st.Cursor()
	a.Reset(c)
	return c
}

// Pending returns the size of the uncommitted batch, in bytes and changes.
func (a *Applier) Pending() (bytes int, changes int) { return a.batch.Size(), a.batch.Changes() }

func (a *Applier) source(name string) *sourceState {
	s := a.sources[name]
	if s == nil {
		a.mu.Lock()
		s = &sourceState{}
		a.sources[name] = s
		a.mu.Unlock()
	}
	return s
}

func (a *Applier) count(name string) *counts {
	c := a.counts[name]
	if c == nil {
		c = &counts{}
		a.counts[name] = c
	}
	return c
}

// Handle applies one message to the open batch (or skips it, or stops its
// source). It returns an error only when the store fails: the caller must
// then stop and restart from the store.
func (a *Applier) Handle(m Message) error {
	if a.rescan != nil {
		return nil // the stream is to be read again (RescanWanted)
	}
	if m.StreamSeq > a.lastSeq {
		a.lastSeq, a.lastID = m.StreamSeq, MessageID(m.Subject, m.Header)
	}
	if load.IsSubject(a.prefix[:len(a.prefix)-1], m.Subject) {
		return a.handleLoad(m)
	}
	a.batch.SetMessageSeq(m.StreamSeq)
	b, err := wire.ParseHeader(m.Header)
	a.curCommit = b.FirstCommit
	if a.curCommit == 0 {
		a.curCommit = b.LastCommit
	}
	subjSource, _ := strings.CutPrefix(m.Subject, a.prefix)
	if err == nil && b.Source != subjSource {
		err = fmt.Errorf("%w: source %q on subject %q", wire.ErrHeader, b.Source, m.Subject)
	}
	if err != nil {
		if !format.ValidSource(subjSource) {
			a.log.Error("message with invalid headers on an unknown subject; ignored", "subject", m.Subject, "stream_seq", m.StreamSeq, "err", err)
			a.m.Errors.WithLabelValues("", KindHeader).Inc()
			return nil
		}
		st := a.source(subjSource)
		a.stop(subjSource, st, &SourceError{Kind: KindHeader, StreamSeq: m.StreamSeq, Err: err})
		return nil
	}
	st := a.source(b.Source)
	a.mu.Lock()
	st.lastSeq = m.StreamSeq
	if end := b.End(); st.shipped.Less(end) { // a split frame counts with its last part
		st.shipped = end
	}
	if b.Torn > 0 && b.Segment > st.tornSeg {
		st.torn += b.Torn
		st.tornSeg = b.Segment
	}
	a.mu.Unlock()

	pos := a.batch.Position(b.Source)
	// Already applied whole: skip without even decompressing.
	if b.Segment < pos.Segment || (b.Segment == pos.Segment && b.To <= pos.Offset) {
		if b.Whole() {
			a.count(b.Source).skipped += b.Frames
		}
		a.m.Messages.WithLabelValues(a.label(b.Source)).Inc()
		return nil
	}
	if b.Parts > 1 && b.Part > 0 && st.joinValid && st.joinKey == partKey(&b) {
		// The next part of a frame whose first part passed the checks.
		return a.handlePart(m, &b, st, pos)
	}
	if gerr := a.checkContinues(&b, pos); gerr != nil {
		a.gap(b.Source, st, &SourceError{Kind: KindGap, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq, Err: gerr})
		return nil
	}
	if b.Parts > 1 {
		return a.handlePart(m, &b, st, pos)
	}
	raw, err := a.dec.Decompress(a.raw, m.Body, &b)
	if err != nil {
		a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
		return nil
	}
	a.raw = raw
	return a.applyRange(m.StreamSeq, &b, st, pos, raw, m.Body)
}

// checkContinues reports a gap unless b continues the source from pos, by
// the wire's chain rule (wire.Batch.Continues).
func (a *Applier) checkContinues(b *wire.Batch, pos store.SourcePosition) error {
	if pos.Segment == 0 && a.midChain && b.PrevEnd != 0 {
		a.log.Warn("starting a source in the middle of its chain (--start-mid-chain)", "source", b.Source, "segment", b.Segment, "offset", b.From)
		return nil
	}
	link, err := b.Continues(format.Position{Segment: pos.Segment, Offset: pos.Offset})
	if err != nil {
		if pos.Segment == 0 {
			return fmt.Errorf("%w: %v: the stream no longer holds the beginning", ErrGap, err)
		}
		return fmt.Errorf("%w: %v", ErrGap, err)
	}
	switch link {
	case wire.LinkSkipsEmpty:
		a.log.Warn("segments skipped as holding no frame (their successor says so)",
			"source", b.Source, "from_segment", pos.Segment+1, "to_segment", b.Segment-1)
	case wire.LinkSkipsHeaderOnly:
		// Segment pos.Segment+1 holds no frame (a writer crashed right after
		// creating it), so it produced no message (wire package doc).
		a.log.Warn("segment skipped as empty (its successor says it ended at its header)",
			"source", b.Source, "empty_segment", pos.Segment+1, "applied_segment", pos.Segment, "applied_offset", pos.Offset)
	}
	return nil
}

func (a *Applier) handlePart(m Message, b *wire.Batch, st *sourceState, pos store.SourcePosition) error {
	if b.Segment == pos.Segment && b.From != pos.Offset {
		a.gap(b.Source, st, &SourceError{Kind: KindGap, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: split frame [%d, %d) does not start at the applied position %d", ErrGap, b.From, b.To, pos.Offset)})
		return nil
	}
	if span := b.To - b.From; span > a.maxTx {
		a.dropJoin(st)
		a.stop(b.Source, st, &SourceError{Kind: KindLimit, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: a frame split over %d messages spans %d bytes, over the receiver's transaction limit of %d (--max-tx-mb)", ErrLimit, b.Parts, span, a.maxTx)})
		return nil
	}
	key := partKey(b)
	if b.Part == 0 {
		st.join, st.joinKey, st.joinNext, st.joinValid = st.join[:0], key, 0, true
		st.hold = m.StreamSeq
	} else if !st.joinValid || st.joinKey != key || b.Part != st.joinNext {
		a.dropJoin(st)
		a.gap(b.Source, st, &SourceError{Kind: KindGap, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: part %d of %d of the frame at %d arrived without the parts before it", ErrGap, b.Part, b.Parts, b.From)})
		return nil
	}
	if int64(len(st.join)+b.RawLen) > b.To-b.From {
		a.dropJoin(st)
		a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: part %d of %d: parts add up to more than the frame's %d bytes", ErrCorrupt, b.Part, b.Parts, b.To-b.From)})
		return nil
	}
	// The part is inflated into the join buffer's tail; the buffer grows
	// by doubling, never past the frame's span, and every source's
	// buffers together stay within the join budget.
	if need := len(st.join) + b.RawLen; need > cap(st.join) {
		grown := min(max(need, 2*cap(st.join)), int(b.To-b.From))
		if a.joined-int64(cap(st.join))+int64(grown) > 2*a.maxTx {
			a.dropJoin(st)
			a.stop(b.Source, st, &SourceError{Kind: KindLimit, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
				Err: fmt.Errorf("%w: split frames of several sources being joined would hold more than %d bytes (twice --max-tx-mb); restart the receiver to read this frame again", ErrLimit, 2*a.maxTx)})
			return nil
		}
		nj := make([]byte, len(st.join), grown)
		copy(nj, st.join)
		a.joined += int64(grown - cap(st.join))
		st.join = nj
	}
	tail := st.join[len(st.join):]
	part, err := a.dec.Decompress(tail, m.Body, b)
	if err != nil {
		a.dropJoin(st)
		a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: part %d of %d: %w", ErrCorrupt, b.Part, b.Parts, err)})
		return nil
	}
	if len(part) > 0 && &part[0] != &tail[:1][0] {
		copy(tail[:len(part)], part) // not inflated in place
	}
	st.join = st.join[:len(st.join)+len(part)]
	st.joinNext++
	if b.Part < b.Parts-1 {
		return nil
	}
	raw := st.join
	a.dropJoin(st)
	if int64(len(raw)) != b.To-b.From {
		a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: m.StreamSeq,
			Err: fmt.Errorf("%w: %d parts joined into %d bytes, the frame spans %d", ErrCorrupt, b.Parts, len(raw), b.To-b.From)})
		return nil
	}
	return a.applyRange(m.StreamSeq, b, st, pos, raw, nil)
}

// dropJoin forgets the split frame a source was joining, releasing its
// buffer from the join budget.
func (a *Applier) dropJoin(st *sourceState) {
	a.joined -= int64(cap(st.join))
	st.join, st.joinValid = nil, false
}

// partKey identifies the frame a part belongs to.
func partKey(b *wire.Batch) wire.Batch {
	return wire.Batch{Source: b.Source, Segment: b.Segment, From: b.From, To: b.To, Parts: b.Parts}
}

// changeCost is what decoding and applying one change holds beyond its
// bytes: its format.Change (112 bytes), its buffered row write and its
// share of the Pebble batch. A message of 16 MiB of 11-byte changes held
// 34x its raw size when decoded whole (TestTinyChangesDecodeBounded).
const changeCost = 200

// decodeChunkCost bounds what the transactions decoded at once may cost
// (txCost), beyond a single transaction (bounded by maxTx). A shipper's
// message is at most the server's max_payload raw (1 MiB by default): of
// ~200-byte changes it costs ~2 MiB and is decoded whole.
const decodeChunkCost = 16 << 20

// txCost is the working set of decoding and applying a transaction frame of
// frameLen bytes holding changes changes.
func txCost(frameLen, changes int) int64 { return int64(frameLen) + int64(changes)*changeCost }

// applyRange checks every frame of raw (the bytes [b.From, b.To) of the
// segment), then applies those after pos.
//
// Decoding is bounded: transactions are decoded a chunk at a time, a chunk
// costing at most decodeChunkCost (txCost). A message that fits one chunk, the
// usual case, is checked whole and decoded before anything of it is
// applied, so a corrupt message has no effect. A bigger one is first
// checked whole without decoding (every frame's CRC and structure, the
// change counts, the headers' totals, no transaction over maxTx), then
// decoded and applied chunk by chunk, committing between chunks with the
// stream cursor held before the message; a transaction that fails to decode
// in a later chunk (only a forged frame with a valid CRC can) stops the
// source after the valid frames before it. A transaction that alone costs
// more than maxTx stops its source (KindLimit).
func (a *Applier) applyRange(seq uint64, b *wire.Batch, st *sourceState, pos store.SourcePosition, raw, body []byte) error {
	// The frame rules (types, the seal naming the next segment, nothing
	// after a seal) are format.Walker's; the receiver sees no segment
	// header, so it checks by this package's format version.
	walk := format.NewWalker(b.Segment, 0, false)
	if b.Segment == pos.Segment && pos.Sealed {
		walk.SetSealed(format.Seal{Next: b.Segment + 1})
	}
	c := a.count(b.Source)
	applied := false
	for i, chunk := 0, 0; i < len(raw); chunk++ {
		next, ntx, nframes, nchanges, ok := a.decodeChunk(seq, b, st, pos, raw, i, walk)
		if !ok {
			break // stopped
		}
		whole := chunk == 0 && next == len(raw)
		if whole {
			if nframes != b.Frames {
				a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: seq,
					Err: fmt.Errorf("%w: the range holds %d frames, headers say %d", ErrCorrupt, nframes, b.Frames)})
				return nil
			}
			if len(a.frames) == nframes && nchanges != b.Changes {
				a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: seq,
					Err: fmt.Errorf("%w: the range holds %d changes, headers say %d", ErrCorrupt, nchanges, b.Changes)})
				return nil
			}
			if body != nil && len(a.frames) == nframes && ntx > 0 && b.Codec != wire.CodecNone {
				// Applied whole: the change log keeps the body as it came.
				a.batch.LogBody(b.Source, b.Segment, b.From, len(raw), b.Codec, body)
			}
		} else if chunk == 0 && !a.checkRange(seq, b, st, raw) {
			return nil
		}
		c.skipped += nframes - len(a.frames)
		for j := range a.frames {
			f := &a.frames[j]
			var err error
			switch {
			case f.typ == format.FrameTx && a.txs[f.tx].Prepared:
				// Not applied until an outcome frame says it committed.
				err = a.batch.ParkTx(b.Source, b.Segment, f.off, f.end, seq, &a.txs[f.tx], f.raw)
			case f.typ == format.FrameTx:
				tx := &a.txs[f.tx]
				err = a.batch.ApplyTx(b.Source, b.Segment, f.off, f.end, seq, tx, f.raw)
				c.txs++
				c.changes += len(tx.Changes)
			case f.typ == format.FrameRejection:
				err = a.batch.Reject(b.Source, b.Segment, f.off, f.end, seq, &a.rejs[f.tx])
			case f.typ == format.FrameApplied:
				err = a.batch.AppliedAgain(b.Source, b.Segment, f.off, f.end, seq, &a.again[f.tx])
			case f.typ == format.FrameOutcome:
				err = a.applyOutcome(seq, b, st, f, c)
			default:
				err = a.batch.Advance(b.Source, b.Segment, f.off, f.end, seq, f.t, f.typ == format.FrameSeal)
			}
			if err != nil {
				return fmt.Errorf("consume: applying %s frame of %q at %d:%d: %w", f.typ, b.Source, b.Segment, f.off, err)
			}
			c.bytes += int(f.end - f.off)
			applied = true
		}
		if len(a.frames) > 0 {
			p := a.batch.Position(b.Source)
			a.mu.Lock()
			st.handled, st.handledSeq, st.handledAt = p.Position(), seq, p.AliveAt
			a.mu.Unlock()
		}
		if whole || next == len(raw) {
			break
		}
		// Between chunks: commit what is applied, the cursor held before
		// this message so that a restart reads the rest of it again.
		a.mu.Lock()
		if st.hold == 0 || seq < st.hold {
			st.hold = seq
		}
		a.mu.Unlock()
		if err := a.CommitAsync(); err != nil {
			return err
		}
		i = next
	}
	if applied {
		a.clear(b.Source, st)
	}
	if cap(a.raw) > maxRetainedRaw {
		a.raw = nil
	}
	if len(a.txs) > maxRetainedTxs {
		a.txs = nil
	}
	if len(a.outs) > 0 && cap(a.outs[0].Resolutions) > maxRetainedTxs {
		a.outs = nil
	}
	a.m.Messages.WithLabelValues(a.label(b.Source)).Inc()
	return nil
}

// applyOutcome carries out an outcome frame's resolutions, then moves the
// source past it. Each committed resolution applies a parked transaction,
// so a long outcome frame may add a lot to the batch: it is committed
// between resolutions once it holds decodeChunkCost, with the cursor held
// before the message. A restart then re-reads the outcome, and the
// resolutions already carried out find nothing parked (the park went in the
// same commit as what it applied) and are ignored.
func (a *Applier) applyOutcome(seq uint64, b *wire.Batch, st *sourceState, f *frameRef, c *counts) error {
	o := &a.outs[f.tx]
	for i, r := range o.Resolutions {
		n, found, err := a.batch.Resolve(b.Source, r)
		if err != nil {
			return err
		}
		if found && r.Decision == format.DecisionCommitted {
			c.txs++
			c.changes += n
		}
		if i+1 < len(o.Resolutions) && a.batch.Size() >= decodeChunkCost {
			a.mu.Lock()
			if st.hold == 0 || seq < st.hold {
				st.hold = seq
			}
			a.mu.Unlock()
			if err := a.CommitAsync(); err != nil {
				return err
			}
		}
	}
	return a.batch.Advance(b.Source, b.Segment, f.off, f.end, seq, o.Time, false)
}

// What the applier keeps between messages: buffers above these are freed
// after use rather than held for the next message.
const (
	maxRetainedRaw = 16 << 20
	maxRetainedTxs = 4096
)

// decodeChunk parses the frames of raw from byte i on, checking each and
// decoding transactions into a.frames and a.txs until their txCost reaches
// decodeChunkCost (at least one frame). It returns where it stopped, the
// transactions it decoded and the frames and changes it passed (skipped
// frames included), or ok false if it stopped the source.
func (a *Applier) decodeChunk(seq uint64, b *wire.Batch, st *sourceState, pos store.SourcePosition, raw []byte, i int, walk *format.Walker) (next, ntx, nframes, nchanges int, ok bool) {
	a.frames = a.frames[:0]
	a.rejs = a.rejs[:0]
	a.again = a.again[:0]
	newSeg := b.Segment != pos.Segment
	var cost int64
	nout := 0
	for i < len(raw) {
		off := b.From + int64(i)
		f, n, err := format.ParseFrame(raw[i:])
		if err != nil {
			if errors.Is(err, format.ErrTornTail) {
				err = fmt.Errorf("%w: the message ends inside a frame (%d bytes left)", format.ErrCorrupt, len(raw)-i)
			}
			a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
			return
		}
		end := off + int64(n)
		if !newSeg && end <= pos.Offset {
			i += n
			nframes++
			continue // applied before: skip this frame
		}
		if f.Type == format.FrameOutcome && int64(n)*8 > a.maxTx {
			// A resolution takes 3 bytes or more and ~24 decoded: refused
			// before anything decodes it.
			a.stop(b.Source, st, &SourceError{Kind: KindLimit, Segment: b.Segment, Offset: off, StreamSeq: seq,
				Err: fmt.Errorf("%w: an outcome frame of %d bytes would hold ~%d MiB decoded, over the receiver's limit of %d MiB (--max-tx-mb)", ErrLimit, n, (int64(n)*8)>>20, a.maxTx>>20)})
			return
		}
		info, err := walk.CheckPrefix(f.Type, f.Payload, len(f.Payload))
		if err != nil {
			a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
			return
		}
		if !newSeg && off < pos.Offset {
			a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq,
				Err: fmt.Errorf("%w: frame [%d, %d) straddles the applied position %d: frame boundaries disagree", ErrCorrupt, off, end, pos.Offset)})
			return
		}
		ref := frameRef{raw: raw[i : i+n], typ: f.Type, off: off, end: end, t: info.Time}
		switch {
		case f.Type == format.FrameTx:
			tc := txCost(n, info.Changes)
			if tc > a.maxTx {
				a.stop(b.Source, st, limitError(b, off, seq, n, info.Changes, a.maxTx))
				return
			}
			if cost+tc > decodeChunkCost && len(a.frames) > 0 {
				return i, ntx, nframes, nchanges, true // the next chunk starts here
			}
			cost += tc
			if ntx == len(a.txs) {
				a.txs = append(a.txs, format.Tx{})
			}
			if err := format.DecodeTx(f.Payload, &a.txs[ntx]); err != nil {
				a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
				return
			}
			ref.tx = ntx
			ntx++
			nchanges += len(a.txs[ref.tx].Changes)
		case f.Type == format.FrameOutcome:
			if nout == len(a.outs) {
				a.outs = append(a.outs, format.Outcome{})
			}
			if err := format.DecodeOutcome(f.Payload, &a.outs[nout]); err != nil {
				a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
				return
			}
			ref.tx, ref.t = nout, a.outs[nout].Time
			nout++
		case f.Type == format.FrameRejection:
			r, err := format.DecodeRejection(f.Payload)
			if err != nil {
				a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
				return
			}
			ref.tx = len(a.rejs)
			a.rejs = append(a.rejs, r)
		case f.Type == format.FrameApplied:
			r, err := format.DecodeApplied(f.Payload)
			if err != nil {
				a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
				return
			}
			ref.tx, ref.t = len(a.again), r.Time
			a.again = append(a.again, r)
		}
		walk.Add(info)
		i += n
		nframes++
		a.frames = append(a.frames, ref)
	}
	return i, ntx, nframes, nchanges, true
}

// checkRange checks a message too big to decode at once before any of it is
// applied: every frame's CRC and structure, each transaction's change
// count (format.TxChangeCount, without decoding the changes) against maxTx,
// and the totals against the headers. It stops the source and returns false
// on the first problem.
func (a *Applier) checkRange(seq uint64, b *wire.Batch, st *sourceState, raw []byte) bool {
	nframes, nchanges := 0, 0
	for i := 0; i < len(raw); {
		off := b.From + int64(i)
		f, n, err := format.ParseFrame(raw[i:])
		if err == nil && f.Type == format.FrameTx {
			var k int
			if k, err = format.TxChangeCount(f.Payload, len(f.Payload)); err == nil && txCost(n, k) > a.maxTx {
				a.stop(b.Source, st, limitError(b, off, seq, n, k, a.maxTx))
				return false
			}
			nchanges += k
		}
		if err != nil {
			a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: off, StreamSeq: seq, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)})
			return false
		}
		i += n
		nframes++
	}
	if nframes != b.Frames || nchanges != b.Changes {
		a.stop(b.Source, st, &SourceError{Kind: KindCorrupt, Segment: b.Segment, Offset: b.From, StreamSeq: seq,
			Err: fmt.Errorf("%w: the range holds %d frames and %d changes, headers say %d and %d", ErrCorrupt, nframes, nchanges, b.Frames, b.Changes)})
		return false
	}
	return true
}

func limitError(b *wire.Batch, off int64, seq uint64, frameLen, changes int, maxTx int64) *SourceError {
	return &SourceError{Kind: KindLimit, Segment: b.Segment, Offset: off, StreamSeq: seq,
		Err: fmt.Errorf("%w: a transaction of %d bytes and %d changes would hold ~%d MiB to decode and apply, over the receiver's limit of %d MiB (--max-tx-mb)",
			ErrLimit, frameLen, changes, txCost(frameLen, changes)>>20, maxTx>>20)}
}

func (a *Applier) stop(source string, st *sourceState, e *SourceError) {
	pos := a.batch.Position(source)
	e.Source, e.AppliedSegment, e.AppliedOffset = source, pos.Segment, pos.Offset
	a.mu.Lock()
	first := st.err == nil
	if first {
		st.err = e
		st.stopCommit = a.curCommit
		if st.hold == 0 || e.StreamSeq < st.hold {
			st.hold = e.StreamSeq
		}
	}
	a.mu.Unlock()
	label := a.label(source)
	if !first {
		a.m.Blocked.WithLabelValues(label).Inc()
		return
	}
	a.m.Errors.WithLabelValues(label, e.Kind).Inc()
	if label == source {
		a.m.Stopped.WithLabelValues(source).Set(1)
		a.log.Error("source stopped", "source", source, "kind", e.Kind, "segment", e.Segment, "offset", e.Offset,
			"stream_seq", e.StreamSeq, "err", e)
	}
}

// UnknownSource is the metrics label of sources with nothing applied: the
// stream may carry any number of subjects, so a label per name would let
// garbage grow /metrics without bound. /v1/status names them (bounded).
const UnknownSource = "_unapplied"

// label returns the metrics label for source: its name once it has
// applied something, else UnknownSource.
func (a *Applier) label(source string) string {
	if a.batch.Position(source).Segment == 0 {
		return UnknownSource
	}
	return source
}

// clear marks a source healthy again after it applied frames.
func (a *Applier) clear(source string, st *sourceState) {
	a.mu.Lock()
	was := st.err
	st.err, st.hold = nil, 0
	a.mu.Unlock()
	if was != nil {
		a.m.Stopped.WithLabelValues(source).Set(0)
		a.log.Info("source resumed: a message continued from the applied position", "source", source)
	}
}

// cursor is where to resume reading after a restart: the last message seen,
// but never past one that a source still needs (an incomplete split frame,
// or the message that stopped it, so that a restart retries it).
func (a *Applier) cursor() store.StreamCursor {
	seq := a.lastSeq
	a.mu.Lock()
	for _, s := range a.sources {
		if s.hold > 0 && s.hold-1 < seq {
			seq = s.hold - 1
		}
	}
	a.mu.Unlock()
	c := store.StreamCursor{Seq: seq, Created: a.created}
	if a.lastID != "" {
		c.CheckSeq, c.CheckID = a.lastSeq, a.lastID
	}
	return c
}

// LastHandled returns the stream sequence and MessageID of the last message
// handled ("" if not known), for checking that the stream still holds it.
func (a *Applier) LastHandled() (uint64, string) { return a.lastSeq, a.lastID }

// MessageID identifies a stream message beyond its sequence number: its
// subject and Nats-Msg-Id (which the shipper derives from the message's
// source position).
func MessageID(subject string, h map[string][]string) string {
	id := ""
	if v := h[wire.HdrMsgID]; len(v) > 0 {
		id = v[0]
	}
	return subject + " " + id
}

// Commit commits the open batch with the stream cursor and waits until it,
// and any commit in flight, is in the store.
func (a *Applier) Commit() error {
	err := a.CommitAsync()
	if werr := a.batch.Wait(); err == nil {
		err = werr
	}
	return err
}

// CommitAsync starts committing the open batch with the stream cursor and
// returns once the previous commit is done: decoding the next messages
// overlaps this commit. The store shows the batch once the commit is done;
// Commit waits for it.
func (a *Applier) CommitAsync() error {
	c := a.cursor()
	if a.batch.Empty() && c == a.handed {
		return nil
	}
	a.batch.SetCursor(c)
	if err := a.batch.CommitAsync(); err != nil {
		return err
	}
	a.handed = c
	for src, n := range a.counts {
		a.m.Changes.WithLabelValues(src).Add(float64(n.changes))
		a.m.Transactions.WithLabelValues(src).Add(float64(n.txs))
		a.m.Bytes.WithLabelValues(src).Add(float64(n.bytes))
		if n.skipped > 0 {
			a.m.Skipped.WithLabelValues(src).Add(float64(n.skipped))
		}
		*n = counts{} // zeroed, not dropped: a message being applied still counts into it
	}
	return nil
}

// SetTail records where a source's last message in the stream ends and its
// stream sequence, and the first message after the applied one (nextSeq 0:
// none or not known) with its first commit time (polled by the consumer),
// for lag in bytes, messages and seconds.
func (a *Applier) SetTail(source string, seq uint64, end format.Position, nextSeq uint64, nextCommit int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sources[source]
	if s == nil {
		s = &sourceState{}
		a.sources[source] = s
	}
	s.tailSeq, s.tail = seq, end
	s.nextSeq, s.nextCommit = nextSeq, nextCommit
}

// SourceStatus is what the applier knows of a source beyond its position.
type SourceStatus struct {
	Err       *SourceError
	LastSeq   uint64
	Shipped   format.Position // end of the furthest message seen
	TornBytes int64
	// TailSeq and Tail: the source's last message in the stream, as last
	// polled (0: not known).
	TailSeq uint64
	Tail    format.Position
	// NextSeq and NextCommit: the first message of the source in the
	// stream after the one last applied, and its first commit time, as
	// last polled while the source was behind (0: not known).
	NextSeq    uint64
	NextCommit int64
	// Handled is the end of the last frame handed to the store (committed
	// or being committed), HandledSeq its message, HandledAt its time.
	Handled    format.Position
	HandledSeq uint64
	HandledAt  int64
	// StopCommit is the first commit time of the message that stopped the
	// source (0: unknown).
	StopCommit int64
}

// LagSeconds is how old, at now, the oldest change of the source not yet
// applied is, as far as the stream shows it (what the shipper has seen of
// the files), given the source's committed position p: 0 when everything
// the stream holds of it is applied, however long ago its last write was.
// Behind, it is the first unapplied message's first commit time when known
// (the one that stopped the source, or the next one polled), else the time
// of the last applied frame (an upper bound: what follows is newer).
func (s *SourceStatus) LagSeconds(now time.Time, p store.SourcePosition) float64 {
	end, done := s.Shipped, p.Position()
	if end.Less(s.Tail) {
		end = s.Tail
	}
	seq, at := p.StreamSeq, p.AliveAt
	if done.Less(s.Handled) {
		done, seq, at = s.Handled, s.HandledSeq, s.HandledAt
	}
	var t int64
	switch {
	case !done.Less(end):
		return 0
	case s.Err != nil && s.StopCommit > 0:
		t = s.StopCommit
	case s.NextSeq > seq && s.NextCommit > 0:
		t = s.NextCommit
	default:
		t = at
	}
	if t == 0 {
		return 0
	}
	return max(now.Sub(time.Unix(0, t)).Seconds(), 0)
}

// Status returns per-source status. Safe for concurrent use.
func (a *Applier) Status() map[string]SourceStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]SourceStatus, len(a.sources))
	for name, s := range a.sources {
		out[name] = SourceStatus{Err: s.err, LastSeq: s.lastSeq, Shipped: s.shipped, TornBytes: s.torn, TailSeq: s.tailSeq, Tail: s.tail,
			NextSeq: s.nextSeq, NextCommit: s.nextCommit, Handled: s.handled, HandledSeq: s.handledSeq, HandledAt: s.handledAt, StopCommit: s.stopCommit}
	}
	return out
}
