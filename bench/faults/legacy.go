package faults

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
)

// Legacy configures the synthetic legacy application of the fault suite: the
// retail workload of bench/workload (customers, orders, order lines, stock;
// inserts, updates, deletes) committed with format.Writer. A run first loads
// the workload's initial rows (as insert transactions), then writes its
// transactions.
type Legacy struct {
	Dir    string
	Source string
	// Changes stops the writer after that many changes of the workload,
	// the initial load not counted (0: until ctx ends).
	Changes int
	// Rate is in changes per second; 0 writes as fast as possible.
	Rate int
	// TxSize is the number of changes per transaction (default 4).
	TxSize int
	// RowSize is the approximate size of a row image in bytes (default 200).
	RowSize int
	// Rows is the number of customers, products and orders of the initial
	// load (default 300 each).
	Rows int
	// Seed makes the run reproducible.
	Seed uint64
	// TablePrefix is put before every table name, so that sources that
	// share a receiver write their own tables.
	TablePrefix string
	// Sync is the writer's sync policy (default SyncNone: the suite kills
	// processes, not machines).
	Sync format.SyncPolicy
	// MaxSegmentSize rotates segments (default 4 MiB, so runs span many).
	MaxSegmentSize int64
}

// LegacyStats counts what a writer committed, initial load included.
type LegacyStats struct {
	Transactions int
	Changes      int
}

const loadTxSize = 100

// Run writes until cfg.Changes are committed or ctx ends, then closes the
// writer (sealing its segment).
func (cfg Legacy) Run(ctx context.Context) (LegacyStats, error) {
	var st LegacyStats
	if cfg.Rows == 0 {
		cfg.Rows = 300
	}
	if cfg.MaxSegmentSize == 0 {
		cfg.MaxSegmentSize = 4 << 20
	}
	s, err := workload.NewStream(workload.Config{Seed: cfg.Seed, TxSize: cfg.TxSize, RowSize: cfg.RowSize,
		Customers: cfg.Rows, Products: cfg.Rows, Orders: cfg.Rows}, 0)
	if err != nil {
		return st, fmt.Errorf("faults: %w", err)
	}
	w, err := format.OpenWriter(cfg.Dir, cfg.Source, format.WithSync(cfg.Sync, 0), format.WithMaxSegmentSize(cfg.MaxSegmentSize))
	if err != nil {
		return st, fmt.Errorf("faults: opening the legacy writer: %w", err)
	}
	commit := func(tx *format.Tx) error {
		if _, err := w.Commit(tx); err != nil {
			w.Close()
			return fmt.Errorf("faults: legacy commit %d: %w", st.Transactions+1, err)
		}
		st.Transactions++
		st.Changes += len(tx.Changes)
		return nil
	}
	var tx format.Tx
	for _, tr := range s.Initial() {
		for i := 0; i < len(tr.Rows); i += loadTxSize {
			tx.Changes = tx.Changes[:0]
			tx.CommitTime = time.Now().UnixNano()
			for _, row := range tr.Rows[i:min(i+loadTxSize, len(tr.Rows))] {
				tx.Changes = append(tx.Changes, format.Change{Table: cfg.TablePrefix + tr.Table.Name, Op: format.OpInsert,
					Key: row.AppendKey(nil, tr.Table), After: row.AppendJSON(nil, tr.Table)})
			}
			if err := commit(&tx); err != nil {
				return st, err
			}
		}
	}
	loaded := st.Changes
	pace := workload.NewPacer(float64(cfg.Rate))
	for cfg.Changes == 0 || st.Changes-loaded < cfg.Changes {
		wtx := s.Next()
		if err := pace.Wait(ctx, len(wtx.Changes)); err != nil {
			break
		}
		wtx.AppendFormat(&tx, time.Now().UnixNano(), false)
		if cfg.TablePrefix != "" {
			for i := range tx.Changes {
				tx.Changes[i].Table = cfg.TablePrefix + tx.Changes[i].Table
			}
		}
		if err := commit(&tx); err != nil {
			return st, err
		}
	}
	if err := w.Close(); err != nil {
		return st, fmt.Errorf("faults: closing the legacy writer: %w", err)
	}
	return st, nil
}
