package format

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Prepared is a transaction appended by Writer.Prepare whose outcome is not
// recorded yet. Exactly one of Commit and Abort records it; until then
// readers treat the transaction as in doubt, never as committed.
type Prepared struct {
	w    *Writer
	pos  Position
	end  int64 // end of its frame, in the writer's appended bytes
	done bool  // w.mu
}

// ErrResolved is returned by Prepared.Commit and Abort when the outcome was
// already recorded, and by Writer.Resolve for a position not in doubt.
var ErrResolved = errors.New("format: transaction already resolved or not in doubt")

// Prepare appends tx as a prepared transaction frame (SPEC.md, "Commit
// order") and returns once the frame is written to the operating system:
// it survives the application being killed from then on, and it precedes in
// the file every transaction that could only run after this one released its
// locks. Call it inside the database transaction, after its last write and
// before COMMIT; then call Commit on the result if COMMIT succeeded, Abort if
// it failed (or the transaction was rolled back). If COMMIT's outcome is
// unknown (the connection broke during COMMIT), ask the database, or leave
// the transaction in doubt: the next Writer resolves it (WithResolver).
//
// Under SyncAlways the frame's fsync starts as Prepare returns and runs
// while the database commits; Commit waits for it.
//
// An error means the frame may not be in the file: roll the database
// transaction back. Like Commit's, I/O errors are sticky.
func (w *Writer) Prepare(tx *Tx) (*Prepared, error) {
	ps, err := w.PrepareBatch([]*Tx{tx})
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// PrepareBatch is Prepare for the transactions of one database transaction
// that are recorded as separate frames (a legacy carrying out an inbox
// file's commands in one transaction, one frame per command): it appends
// them in order, one prepared frame each, and returns once all are written
// to the operating system with one write, not one per frame. The order
// contract is Prepare's: call it after the last write, before COMMIT, then
// Commit (or Abort) every result.
//
// An error means no frame counts: the frames already appended for earlier
// transactions of txs are recorded as aborted, so nothing of the batch is
// ever applied; roll the database transaction back.
func (w *Writer) PrepareBatch(txs []*Tx) ([]*Prepared, error) {
	ps := make([]*Prepared, 0, len(txs))
	w.mu.Lock()
	var end int64
	var err error
	for _, tx := range txs {
		prepared := tx.Prepared
		tx.Prepared = true
		var pos Position
		pos, end, err = w.appendLocked(tx, true)
		tx.Prepared = prepared
		if err != nil {
			break
		}
		w.inflight[pos] = struct{}{}
		ps = append(ps, &Prepared{w: w, pos: pos, end: end})
	}
	if err != nil {
		// An invalid transaction (or a sticky I/O error) after some were
		// appended: those frames are in the buffer and may reach the
		// file; their abort keeps readers from ever applying them.
		for _, p := range ps {
			p.done = true
			delete(w.inflight, p.pos)
			if w.usable() == nil {
				w.addOutcomeLocked(Resolution{Prepared: p.pos, Decision: DecisionAborted})
			}
		}
		w.mu.Unlock()
		return nil, err
	}
	if w.opts.sync == SyncAlways && len(ps) > 0 {
		w.needSync = max(w.needSync, end)
	}
	w.mu.Unlock()
	if len(ps) == 0 {
		return ps, nil
	}
	if err := w.writeTo(end); err != nil {
		return nil, err
	}
	if w.opts.sync == SyncAlways {
		w.wake() // the flusher starts the fsync now, overlapping the COMMIT
	}
	return ps, nil
}

// Position returns where the prepared frame is: the transaction's identity
// in its source, which its outcome names.
func (p *Prepared) Position() Position { return p.pos }

// Commit records that the database committed the transaction and, under
// SyncAlways, returns once the prepared frame is durable. The outcome itself
// is written with the next flush and fsynced with the next sync: if it is
// lost in a crash, the transaction is in doubt for the next Writer, which
// resolves it (WithResolver) — it is never applied as committed before.
func (p *Prepared) Commit() error {
	if err := p.w.resolve(p, DecisionCommitted); err != nil {
		return err
	}
	if p.w.opts.sync == SyncAlways {
		return p.w.syncTo(p.end)
	}
	return nil
}

// Abort records that the database rolled the transaction back: readers drop
// it. Nothing waits for the disk (a lost abort leaves the transaction in
// doubt, resolved as aborted by the database later).
func (p *Prepared) Abort() error { return p.w.resolve(p, DecisionAborted) }

func (w *Writer) resolve(p *Prepared, d Decision) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p.done {
		return fmt.Errorf("%w: prepared transaction at %v", ErrResolved, p.pos)
	}
	if err := w.usable(); err != nil {
		return err
	}
	p.done = true
	delete(w.inflight, p.pos)
	w.addOutcomeLocked(Resolution{Prepared: p.pos, Decision: d})
	return nil
}

func (w *Writer) addOutcomeLocked(r Resolution) {
	if len(w.outcomes) == 0 {
		w.wake()
	}
	w.outcomes = append(w.outcomes, r)
}

// encodeOutcomesLocked appends one outcome frame for the resolutions
// recorded since the last one. mu is held.
func (w *Writer) encodeOutcomesLocked() {
	if len(w.outcomes) == 0 {
		return
	}
	before := len(w.buf)
	b, err := AppendOutcome(w.buf, Outcome{Time: w.opts.now().UnixNano(), Resolutions: w.outcomes})
	if err != nil {
		// Resolutions are validated where they are made: a broken
		// invariant, kept as the writer's error rather than a panic.
		w.setErr(fmt.Errorf("format: encoding outcomes: %w", err))
		return
	}
	w.buf = b
	n := int64(len(b) - before)
	w.size += n
	w.appended += n
	w.outcomes = w.outcomes[:0]
}

// lowWatermarkLocked returns the oldest prepared transaction whose outcome
// is in no file yet: in flight, in doubt, or resolved but not encoded. mu is
// held.
func (w *Writer) lowWatermarkLocked() Position {
	var lw Position
	take := func(p Position) {
		if lw == (Position{}) || p.Less(lw) {
			lw = p
		}
	}
	for p := range w.inflight {
		take(p)
	}
	for p := range w.inDoubt {
		take(p)
	}
	for _, r := range w.outcomes {
		take(r.Prepared)
	}
	return lw
}

// InDoubt is a prepared transaction found in the files without an outcome
// when the Writer opened: its writer stopped between Prepare and recording
// the outcome.
type InDoubt struct {
	Position Position
	Tx       *Tx
}

// InDoubt returns the prepared transactions of earlier writers that are
// still unresolved, oldest first. Receivers hold each one back (never
// applied, never dropped) until its outcome is written: resolve them with
// Resolve, after asking the database whether they committed (for
// PostgreSQL, Tx.ID holding txid_current() and pg_xact_status; SPEC.md,
// "In-doubt transactions").
func (w *Writer) InDoubt() []InDoubt {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]InDoubt, 0, len(w.inDoubt))
	for p, tx := range w.inDoubt {
		out = append(out, InDoubt{Position: p, Tx: tx})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Position.Less(out[j].Position) })
	return out
}

// Resolve records the outcome of an in-doubt transaction.
func (w *Writer) Resolve(pos Position, d Decision) error {
	if d != DecisionCommitted && d != DecisionAborted {
		return fmt.Errorf("%w: decision %v for %v (want committed or aborted)", ErrInvalid, d, pos)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if _, ok := w.inDoubt[pos]; !ok {
		return fmt.Errorf("%w: %v", ErrResolved, pos)
	}
	delete(w.inDoubt, pos)
	w.addOutcomeLocked(Resolution{Prepared: pos, Decision: d})
	return nil
}

// Resolver tells whether an in-doubt transaction committed, typically by
// asking the database with the transaction id the application put in
// Tx.ID. DecisionUnknown (or an error) leaves it in doubt.
type Resolver func(ctx context.Context, pos Position, tx *Tx) (Decision, error)

// WithResolver makes OpenWriter resolve the in-doubt transactions it finds
// with r before the Writer is returned; those r cannot decide stay in
// InDoubt.
func WithResolver(r Resolver) WriterOption {
	return func(o *writerOptions) error {
		o.resolver = r
		return nil
	}
}

func (w *Writer) resolveInDoubt(r Resolver) {
	for _, d := range w.InDoubt() {
		dec, err := r(context.Background(), d.Position, d.Tx)
		if err != nil || (dec != DecisionCommitted && dec != DecisionAborted) {
			continue
		}
		w.mu.Lock()
		delete(w.inDoubt, d.Position)
		w.outcomes = append(w.outcomes, Resolution{Prepared: d.Position, Decision: dec})
		w.mu.Unlock()
	}
}

// findInDoubt returns the prepared transactions in segs (a source's
// segments, in order) that no outcome frame resolves. It reads from the
// newest segment's low watermark on: every prepared transaction older than
// that was resolved in the files before the newest segment was created
// (SPEC.md, "In-doubt transactions").
func findInDoubt(segs []SegmentFile) (map[Position]*Tx, error) {
	inDoubt := make(map[Position]*Tx)
	start := -1
	for i := len(segs) - 1; i >= 0 && start < 0; i-- {
		rd, f, err := OpenReader(segs[i].Path, 0)
		if err != nil {
			if errors.Is(err, ErrTornTail) {
				continue // created, never written: the one before decides
			}
			return nil, fmt.Errorf("format: looking for in-doubt transactions: %w", err)
		}
		h := rd.Header()
		f.Close()
		start = i
		if h.Version < 2 {
			break // no prepared transaction before a version 1 segment
		}
		if lw := h.LowWatermark; lw != (Position{}) {
			for start > 0 && segs[start].Segment > lw.Segment {
				start--
			}
		}
	}
	if start < 0 {
		return inDoubt, nil
	}
	var tx Tx
	var o Outcome
	for _, s := range segs[start:] {
		rd, f, err := OpenReader(s.Path, 0)
		if errors.Is(err, ErrTornTail) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("format: looking for in-doubt transactions: %w", err)
		}
		for {
			fr, err := rd.Next()
			if err == io.EOF || errors.Is(err, ErrTornTail) {
				break // the end, or a crashed writer's last frame
			}
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("format: looking for in-doubt transactions (move a damaged segment aside only once it is shipped): %w", err)
			}
			switch fr.Type {
			case FrameTx:
				if len(fr.Payload) < 9 || fr.Payload[8]&txPrepared == 0 {
					continue
				}
				if err := DecodeTx(fr.Payload, &tx); err != nil {
					f.Close()
					return nil, fmt.Errorf("format: looking for in-doubt transactions: %w", &PositionError{Path: s.Path, Segment: s.Segment, Offset: rd.Offset(), Err: err})
				}
				inDoubt[Position{Segment: s.Segment, Offset: rd.Offset()}] = cloneTx(&tx)
			case FrameOutcome:
				if err := DecodeOutcome(fr.Payload, &o); err != nil {
					f.Close()
					return nil, fmt.Errorf("format: looking for in-doubt transactions: %w", &PositionError{Path: s.Path, Segment: s.Segment, Offset: rd.Offset(), Err: err})
				}
				for _, r := range o.Resolutions {
					delete(inDoubt, r.Prepared)
				}
			}
		}
		f.Close()
	}
	return inDoubt, nil
}

// cloneTx copies a decoded transaction out of the buffer it aliases.
func cloneTx(tx *Tx) *Tx {
	c := *tx
	c.Changes = make([]Change, len(tx.Changes))
	for i, ch := range tx.Changes {
		ch.Key = append([]byte(nil), ch.Key...)
		ch.After = append([]byte(nil), ch.After...)
		if ch.Before != nil {
			ch.Before = append([]byte{}, ch.Before...)
		}
		c.Changes[i] = ch
	}
	return &c
}
