package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ferrysync/ferry/format"
)

// Legacy configures the synthetic legacy application of the fault suite: a
// retail writer (customers, orders, order lines, stock) appending
// transactions of inserts, updates and deletes with format.Writer.
type Legacy struct {
	Dir    string
	Source string
	// Changes stops the writer after that many changes (0: until ctx ends).
	Changes int
	// Rate is in changes per second; 0 writes as fast as possible.
	Rate int
	// TxSize is the largest number of changes per transaction (default 8).
	TxSize int
	// RowSize is the approximate size of a row image in bytes (default 200).
	RowSize int
	// Seed makes the run reproducible.
	Seed uint64
	// Sync is the writer's sync policy (default SyncNone: the suite kills
	// processes, not machines).
	Sync format.SyncPolicy
	// MaxSegmentSize rotates segments (default 4 MiB, so runs span many).
	MaxSegmentSize int64
}

// LegacyStats counts what a writer committed.
type LegacyStats struct {
	Transactions int
	Changes      int
}

// Run writes until cfg.Changes are committed or ctx ends, then closes the
// writer (sealing its segment).
func (cfg Legacy) Run(ctx context.Context) (LegacyStats, error) {
	var st LegacyStats
	if cfg.TxSize <= 0 {
		cfg.TxSize = 8
	}
	if cfg.RowSize <= 0 {
		cfg.RowSize = 200
	}
	if cfg.MaxSegmentSize == 0 {
		cfg.MaxSegmentSize = 4 << 20
	}
	w, err := format.OpenWriter(cfg.Dir, cfg.Source, format.WithSync(cfg.Sync, 0), format.WithMaxSegmentSize(cfg.MaxSegmentSize))
	if err != nil {
		return st, fmt.Errorf("faults: opening the legacy writer: %w", err)
	}
	g := newRetail(cfg.Seed, cfg.RowSize)
	start := time.Now()
	var tx format.Tx
	for cfg.Changes == 0 || st.Changes < cfg.Changes {
		if ctx.Err() != nil {
			break
		}
		n := 1 + g.r.IntN(cfg.TxSize)
		if cfg.Changes > 0 && st.Changes+n > cfg.Changes {
			n = cfg.Changes - st.Changes
		}
		g.tx(&tx, n)
		tx.CommitTime = time.Now().UnixNano()
		if _, err := w.Commit(&tx); err != nil {
			w.Close()
			return st, fmt.Errorf("faults: legacy commit %d: %w", st.Transactions+1, err)
		}
		st.Transactions++
		st.Changes += n
		if cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(st.Changes) / float64(cfg.Rate) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
	}
	if err := w.Close(); err != nil {
		return st, fmt.Errorf("faults: closing the legacy writer: %w", err)
	}
	return st, nil
}

// retail generates the legacy's transactions deterministically.
type retail struct {
	r       *rand.Rand
	pad     string
	orders  int // orders created so far
	changes []format.Change
}

func newRetail(seed uint64, rowSize int) *retail {
	pad := make([]byte, max(0, rowSize-80))
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	return &retail{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), pad: string(pad)}
}

// tx fills t with n changes: new orders with their lines and stock
// movements, customer updates, and deletions of old orders' lines.
func (g *retail) tx(t *format.Tx, n int) {
	g.changes = g.changes[:0]
	for len(g.changes) < n {
		switch k := g.r.IntN(10); {
		case k < 3: // a new order
			g.orders++
			g.add("orders", format.OpInsert, "o-"+strconv.Itoa(g.orders), `{"id":%d,"customer":"c-%d","status":"new","pad":%q}`, g.orders, g.r.IntN(5000), g.pad)
		case k < 6: // an order line of a recent order
			o := max(1, g.orders-g.r.IntN(20))
			g.add("order_lines", format.OpUpsert, "o-"+strconv.Itoa(o)+"-"+strconv.Itoa(g.r.IntN(5)), `{"order":%d,"sku":"s-%d","qty":%d,"pad":%q}`, o, g.r.IntN(2000), 1+g.r.IntN(9), g.pad)
		case k < 8: // a stock movement
			g.add("stock", format.OpUpdate, "s-"+strconv.Itoa(g.r.IntN(2000)), `{"qty":%d,"pad":%q}`, g.r.IntN(1000), g.pad)
		case k < 9: // a customer update
			c := g.r.IntN(5000)
			g.add("customers", format.OpUpsert, "c-"+strconv.Itoa(c), `{"id":%d,"name":"customer %d","visits":%d,"pad":%q}`, c, c, g.r.IntN(100), g.pad)
		default: // an old order line deleted
			o := max(1, g.orders-g.r.IntN(50))
			g.changes = append(g.changes, format.Change{Table: "order_lines", Op: format.OpDelete, Key: []byte("o-" + strconv.Itoa(o) + "-" + strconv.Itoa(g.r.IntN(5)))})
		}
	}
	t.ID = strconv.Itoa(g.orders)
	t.Changes = g.changes
}

func (g *retail) add(table string, op format.Op, key, f string, args ...any) {
	row := fmt.Appendf(nil, f, args...)
	g.changes = append(g.changes, format.Change{Table: table, Op: op, Key: []byte(key), After: row})
}
