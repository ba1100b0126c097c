package demo

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
)

// legacy is the demo's synthetic legacy application: the retail workload of
// bench/workload committed to change files with format.Writer, at a fixed
// rate with periodic bursts, or as fast as it can. Its existing rows (the
// workload's initial rows) are in its database only: the demo dumps them
// (rollout.go), they never go through its change files.
type legacy struct {
	w      *format.Writer
	stream *workload.Stream
	rate   float64 // changes/s; 0 = as fast as possible
	burst  float64 // rate multiplier during a burst; <= 1: no bursts

	changes atomic.Int64 // committed changes
	txs     atomic.Int64
	bytes   atomic.Int64 // frame bytes committed
	last    atomic.Int64 // commit time of the last transaction, Unix ns
}

// Bursts: every burstEvery, burstLen at burst times the rate.
const (
	burstEvery = 5 * time.Second
	burstLen   = time.Second
)

func (l *legacy) commit(tx *format.Tx) error {
	tx.CommitTime = time.Now().UnixNano()
	if _, err := l.w.Commit(tx); err != nil {
		return fmt.Errorf("demo: legacy commit: %w", err)
	}
	l.txs.Add(1)
	l.changes.Add(int64(len(tx.Changes)))
	l.bytes.Add(int64(format.TxPayloadLen(tx) + format.FrameHeaderLen))
	l.last.Store(tx.CommitTime)
	return nil
}

// run writes until ctx ends.
func (l *legacy) run(ctx context.Context) error {
	steady := workload.NewPacer(l.rate)
	fast := workload.NewPacer(l.rate * l.burst)
	start := time.Now()
	var tx format.Tx
	for ctx.Err() == nil {
		wtx := l.stream.Next()
		p := steady
		if l.burst > 1 && time.Since(start)%burstEvery >= burstEvery-burstLen {
			p = fast
		}
		if err := p.Wait(ctx, len(wtx.Changes)); err != nil {
			return nil
		}
		wtx.AppendFormat(&tx, 0, false)
		if err := l.commit(&tx); err != nil {
			return err
		}
	}
	return nil
}
