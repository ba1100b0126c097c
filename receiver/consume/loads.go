package consume

import (
	"errors"
	"fmt"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/store"
)

// Initial loads (format/load, SPEC.md "Initial load"). Load messages come on
// "<prefix>.load.<table>" in stream order with the changes; the applier
// hands their rows to the store (Batch.ApplyLoad: the low-watermark merge
// rule, exactly once per message) and their begin, done and failed to the
// load's state. A message the receiver cannot read (bad headers, a body
// that does not inflate or whose CRC fails, rows breaking the load's rules,
// an unknown kind) fails its load only, with an error naming the load, the
// message and the stream seq; later messages of that load are not applied
// until a begin of it comes (a rerun). Sources keep flowing.

// minLoadChange is the fewest bytes an encoded change takes (format's
// smallest change: op, empty table, key and image lengths).
const minLoadChange = 8

// KindLoad labels errors of load messages in ferry_receiver_errors_total.
const KindLoad = "load"

// handleLoad applies one load message.
func (a *Applier) handleLoad(m Message) error {
	prefix := a.prefix[:len(a.prefix)-1]
	h, err := load.ParseHeader(m.Header)
	if err == nil {
		err = load.CheckSubject(prefix, m.Subject, &h)
	}
	if err != nil {
		id, table := first(m.Header, load.HdrLoad), first(m.Header, load.HdrTable)
		if !load.ValidID(id) || table == "" || len(table) > format.MaxTableLen {
			// Nothing names a load to fail: counted and logged.
			a.m.Errors.WithLabelValues("", KindLoad).Inc()
			a.log.Error("load message with invalid headers naming no load; ignored", "subject", m.Subject, "stream_seq", m.StreamSeq, "err", err)
			return nil
		}
		return a.failLoad(id, table, m.StreamSeq, fmt.Errorf("message at stream seq %d on %s: %w", m.StreamSeq, m.Subject, err))
	}
	a.batch.SetMessageSeq(m.StreamSeq)
	switch h.Kind {
	case load.KindBegin:
		b, err := load.DecodeBegin(&h, m.Body)
		if err != nil {
			return a.failLoad(h.Load, h.Table, m.StreamSeq, fmt.Errorf("begin at stream seq %d: %w", m.StreamSeq, err))
		}
		est := uint64(0)
		if b.Estimate > 0 {
			est = uint64(b.Estimate)
		}
		if err := a.batch.BeginLoad(h.Load, h.Table, est, m.StreamSeq); err != nil {
			return fmt.Errorf("consume: load %s: %w", h.Load, err)
		}
		a.log.Info("initial load begins", "load", h.Load, "table", h.Table, "estimate", b.Estimate, "input", b.Input, "stream_seq", m.StreamSeq)
	case load.KindChunk:
		if a.ldec == nil {
			d, err := load.NewDecoder()
			if err != nil {
				return err
			}
			a.ldec = d
		}
		// What decoding may hold, whatever the headers claim: the raw
		// bytes and, at worst, a change per minLoadChange of them.
		if cost := txCost(h.RawLen, max(int(h.Rows), h.RawLen/minLoadChange)); cost > a.maxTx {
			return a.failLoad(h.Load, h.Table, m.StreamSeq, fmt.Errorf("%w: chunk %d part %d at stream seq %d: %d raw bytes could hold ~%d MiB decoded, over the receiver's limit of %d MiB (--max-tx-mb); send smaller chunk messages or raise the limit",
				ErrLimit, h.Chunk, h.Part, m.StreamSeq, h.RawLen, cost>>20, a.maxTx>>20))
		}
		if err := a.ldec.Chunk(&h, m.Body, &a.ltx); err != nil {
			return a.failLoad(h.Load, h.Table, m.StreamSeq, fmt.Errorf("chunk %d part %d at stream seq %d: %w", h.Chunk, h.Part, m.StreamSeq, err))
		}
		c := store.LoadChunk{Load: h.Load, Table: h.Table, Chunk: h.Chunk, Part: h.Part, LowSeq: h.LowSeq, Tx: &a.ltx,
			RawLen: h.RawLen, Codec: h.Codec}
		if h.Codec == wire.CodecNone {
			c.Frame = m.Body
		} else {
			c.Body = m.Body
		}
		res, err := a.batch.ApplyLoad(&c)
		if errors.Is(err, store.ErrLoadInput) {
			return a.failLoad(h.Load, h.Table, m.StreamSeq, fmt.Errorf("chunk %d part %d at stream seq %d: %w", h.Chunk, h.Part, m.StreamSeq, err))
		}
		if err != nil {
			return fmt.Errorf("consume: applying load %s chunk %d part %d: %w", h.Load, h.Chunk, h.Part, err)
		}
		a.m.LoadRows.WithLabelValues("applied").Add(float64(res.Applied))
		a.m.LoadRows.WithLabelValues("dropped").Add(float64(res.Dropped))
		if res.Bulk {
			a.m.LoadRows.WithLabelValues("ingested").Add(float64(res.Applied))
		}
		if res.Duplicate {
			a.m.LoadRows.WithLabelValues("duplicate").Add(float64(len(a.ltx.Changes)))
		}
		if len(a.ltx.Changes) > maxRetainedTxs {
			a.ltx = format.Tx{}
		}
	case load.KindDone:
		if err := a.batch.EndLoad(h.Load, h.Table, true, uint64(h.Rows), "", m.StreamSeq); err != nil {
			return fmt.Errorf("consume: load %s: %w", h.Load, err)
		}
		a.log.Info("initial load done", "load", h.Load, "table", h.Table, "rows_sent", h.Rows, "chunks", h.Chunks, "stream_seq", m.StreamSeq)
	case load.KindFailed:
		reason, err := load.DecodeReason(&h, m.Body)
		if err != nil {
			reason = err.Error()
		}
		return a.failLoad(h.Load, h.Table, m.StreamSeq, fmt.Errorf("the loader gave up: %s", reason))
	}
	a.m.Messages.WithLabelValues(KindLoad).Inc()
	return nil
}

// failLoad records that load id failed at stream seq seq.
func (a *Applier) failLoad(id, table string, seq uint64, reason error) error {
	a.m.Errors.WithLabelValues("", KindLoad).Inc()
	a.log.Error("initial load failed; its later messages are not applied until it is run again", "load", id, "table", table, "stream_seq", seq, "err", reason)
	msg := fmt.Sprintf("load %s of table %s: %v", id, table, reason) + "; nothing of that message was applied and the load's later messages are ignored: fix the loader's input and run the load again (its begin resumes it)"
	if err := a.batch.EndLoad(id, table, false, 0, msg, seq); err != nil {
		return fmt.Errorf("consume: recording the failure of load %s: %w", id, err)
	}
	return nil
}

func first(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}
