// Package workload generates the retail workload that stands in for a legacy
// application in Ferry's bench suite and demo: customers, orders, order lines
// and stock, changed by transactions with a configurable mix of inserts,
// updates and deletes, row size and transaction size.
//
// A workload is split into Streams, one per concurrent worker of the legacy
// application. Each stream owns a disjoint part of every table's key space
// (ids congruent to the stream number modulo Streams), so concurrent streams
// never touch the same row, never wait on each other's locks and never
// deadlock — except the HotRows: stock of popular products that every
// stream updates (UPDATE … RETURNING: the new quantity is the database's to
// compute), at most one per transaction, so that transactions wait on each
// other's row locks (contention) but never deadlock. Each stream is
// deterministic: the same Config and stream number yield the same
// transactions, byte for byte, on every run (a hot update's resulting row
// depends on how the streams interleaved).
//
// A generated transaction (Tx) is logical: it can be applied to a SQL
// database with Statements (PostgreSQL placeholders, driver-independent
// arguments) and converted to a change-file transaction with AppendFormat.
// The stream keeps the state of the rows it owns, so every update and delete
// targets a row that exists and images carry whole rows.
//
// Typical use:
//
//	cfg := workload.Config{Seed: 1, Streams: 4}
//	s, err := workload.NewStream(cfg, 0)
//	// load s.Initial() once, then:
//	for {
//		tx := s.Next()
//		// apply tx.Statements(nil) in one database transaction, and/or
//		// tx.AppendFormat(&ftx, time.Now().UnixNano(), false); w.Commit(&ftx)
//	}
//
// A Stream is not safe for concurrent use: give each worker its own.
package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
)

// Mix weighs the kinds of change: a change is an insert, an update or a
// delete with probability proportional to its weight.
type Mix struct {
	Insert, Update, Delete int
}

// Config describes a workload. Zero fields take the defaults noted.
type Config struct {
	// Seed makes the workload reproducible. 0 is a valid seed.
	Seed uint64
	// Streams is the number of independent streams (concurrent workers);
	// default 1.
	Streams int
	// TxSize is the number of changes per transaction; default 4.
	TxSize int
	// RowSize is the approximate size of a row as JSON, in bytes; a text
	// payload column pads rows to it. Default 200.
	RowSize int
	// Mix of inserts, updates and deletes; default 40/50/10.
	Mix Mix
	// Customers, Products and Orders are the initial row counts over all
	// streams (each initial order has 3 lines); defaults 10,000 each.
	Customers, Products, Orders int
	// Rate is the target number of changes per second over all streams;
	// 0 means as fast as possible. See Pacer.
	Rate float64
	// HotRows is the number of hot stock rows (skus HotSKU(0…)) shared by
	// every stream; 0: none, every row is one stream's. Their updates
	// need a database: the new row comes from its RETURNING.
	HotRows int
	// HotPct is the share of transactions, in percent, that update one
	// hot row (as their last change); default 50 when HotRows > 0.
	HotPct int
}

// Defaults of Config.
const (
	DefaultTxSize    = 4
	DefaultRowSize   = 200
	DefaultCustomers = 10000
	DefaultProducts  = 10000
	DefaultOrders    = 10000
	DefaultHotPct    = 50
	linesPerOrder    = 3
)

// Default change mix weights.
const (
	DefaultInsert = 40
	DefaultUpdate = 50
	DefaultDelete = 10
)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Streams == 0 {
		c.Streams = 1
	}
	if c.TxSize == 0 {
		c.TxSize = DefaultTxSize
	}
	if c.RowSize == 0 {
		c.RowSize = DefaultRowSize
	}
	if c.Mix == (Mix{}) {
		c.Mix = Mix{Insert: DefaultInsert, Update: DefaultUpdate, Delete: DefaultDelete}
	}
	if c.Customers == 0 {
		c.Customers = DefaultCustomers
	}
	if c.Products == 0 {
		c.Products = DefaultProducts
	}
	if c.Orders == 0 {
		c.Orders = DefaultOrders
	}
	if c.HotRows > 0 && c.HotPct == 0 {
		c.HotPct = DefaultHotPct
	}
	return c
}

// Validate checks c (after WithDefaults).
func (c Config) Validate() error {
	switch {
	case c.Streams < 1 || c.Streams > 1024:
		return fmt.Errorf("workload: %d streams (want 1-1024)", c.Streams)
	case c.TxSize < 1 || c.TxSize > 100000:
		return fmt.Errorf("workload: transaction size %d (want 1-100000 changes)", c.TxSize)
	case c.RowSize < 16 || c.RowSize > 1<<20:
		return fmt.Errorf("workload: row size %d (want 16 bytes to 1 MiB)", c.RowSize)
	case c.Mix.Insert < 0 || c.Mix.Update < 0 || c.Mix.Delete < 0 || c.Mix.Insert+c.Mix.Update+c.Mix.Delete == 0:
		return fmt.Errorf("workload: mix %d/%d/%d (want non-negative weights, not all zero)", c.Mix.Insert, c.Mix.Update, c.Mix.Delete)
	case c.Customers < c.Streams || c.Products < c.Streams || c.Orders < c.Streams:
		return fmt.Errorf("workload: %d customers, %d products, %d orders: want at least one of each per stream (%d)",
			c.Customers, c.Products, c.Orders, c.Streams)
	case c.Rate < 0:
		return fmt.Errorf("workload: negative rate %v", c.Rate)
	case c.HotRows < 0 || c.HotRows > 100000:
		return fmt.Errorf("workload: %d hot rows (want 0-100000)", c.HotRows)
	case c.HotPct < 0 || c.HotPct > 100:
		return fmt.Errorf("workload: hot share %d %% (want 0-100)", c.HotPct)
	}
	return nil
}

// Change is one row change of a transaction.
type Change struct {
	Table *Table
	Op    format.Op // OpInsert, OpUpdate or OpDelete
	// Before is the row before the change (nil for an insert); After the
	// row after it (nil for a delete). Rows are never modified afterwards.
	Before, After Row
	// Set lists the columns an update changes (for its SQL).
	Set []int

	// A hot update (Returning): the row it updates and how.
	hot                          bool
	hotSKU, hotDelta, hotVersion int64
}

// Returning says whether c is a hot-row update whose resulting row only the
// database knows: its statement returns the row (RETURNING, in the table's
// column order, see Row.ScanDest), which SetReturned makes c's After. Its
// Before is nil (no before image).
func (c *Change) Returning() bool { return c.hot }

// SetReturned sets the row a Returning change's statement returned.
func (c *Change) SetReturned(r Row) { c.After = r }

// Rev returns the row version (the rev column) of c's resulting row, if its
// table has one and c is not a delete.
func (c *Change) Rev() (int64, bool) {
	i := c.Table.RevColumn()
	if i < 0 || c.After == nil {
		return 0, false
	}
	return c.After[i].I, true
}

// Tx is one transaction of the legacy application.
type Tx struct {
	// Stream that generated it and its number in that stream, from 1.
	Stream int
	Seq    uint64
	// Version identifies the transaction over all streams
	// ((Seq-1)*Streams + Stream + 1) and is written to the version column
	// of every row the transaction inserts or updates.
	Version int64
	Changes []Change
}

// Statement is one SQL statement with PostgreSQL-style placeholders ($1…);
// Args are int64 or string values. A Returning statement returns one row
// of Table (its columns in order).
type Statement struct {
	SQL       string
	Args      []any
	Returning bool
	Table     *Table
}

// Statements appends the statements that apply tx to dst, to run in one
// database transaction.
func (tx *Tx) Statements(dst []Statement) []Statement {
	for i := range tx.Changes {
		dst = append(dst, tx.Changes[i].Statement())
	}
	return dst
}

// Statement returns the SQL statement that applies c.
func (c *Change) Statement() Statement {
	t := c.Table
	if c.hot {
		return Statement{SQL: hotUpdateSQL, Args: []any{c.hotDelta, c.hotDelta, c.hotVersion, c.hotSKU}, Returning: true, Table: t}
	}
	switch c.Op {
	case format.OpInsert:
		return Statement{SQL: insertSQL(t), Args: c.After.Args(t)}
	case format.OpUpdate:
		args := make([]any, 0, len(c.Set)+t.KeyLen)
		for _, col := range c.Set {
			args = append(args, c.After.arg(t, col, c.After[col]))
		}
		for i := 0; i < t.KeyLen; i++ {
			args = append(args, c.After.arg(t, i, c.After[i]))
		}
		return Statement{SQL: updateSQL(t, c.Set), Args: args}
	default:
		args := make([]any, t.KeyLen)
		for i := range args {
			args[i] = c.Before.arg(t, i, c.Before[i])
		}
		return Statement{SQL: deleteSQL(t), Args: args}
	}
}

// hotUpdateSQL takes $1 items of a hot row's stock (restocking it when
// short), stamps it with the transaction's version and bumps its row
// version, and returns the row.
var hotUpdateSQL = "UPDATE stock SET qty = CASE WHEN qty > $1 THEN qty - $2 ELSE " + strconv.Itoa(hotStock) +
	" END, version = $3, rev = rev + 1 WHERE sku = $4 RETURNING " + strings.Join(stock.ColumnNames(), ", ")

func insertSQL(t *Table) string {
	s := "INSERT INTO " + t.Name + " ("
	v := ") VALUES ("
	for i, c := range t.Columns {
		if i > 0 {
			s += ", "
			v += ", "
		}
		s += c.Name
		v += "$" + strconv.Itoa(i+1)
	}
	return s + v + ")"
}

func updateSQL(t *Table, set []int) string {
	s := "UPDATE " + t.Name + " SET "
	n := 0
	for i, col := range set {
		if i > 0 {
			s += ", "
		}
		n++
		s += t.Columns[col].Name + " = $" + strconv.Itoa(n)
	}
	return s + whereKey(t, n)
}

func deleteSQL(t *Table) string { return "DELETE FROM " + t.Name + whereKey(t, 0) }

func whereKey(t *Table, n int) string {
	s := " WHERE "
	for i := 0; i < t.KeyLen; i++ {
		if i > 0 {
			s += " AND "
		}
		n++
		s += t.Columns[i].Name + " = $" + strconv.Itoa(n)
	}
	return s
}

// AppendFormat fills dst with tx as a change-file transaction committed at
// commitTime (Unix ns): one change per row change, keyed by the row's key
// ("42", "1207/3" for order lines), JSON images of whole rows. Before images
// are included only if withBefore. dst.Changes is reused; the keys and
// images share one new buffer, so dst stays valid after the next call.
func (tx *Tx) AppendFormat(dst *format.Tx, commitTime int64, withBefore bool) {
	dst.CommitTime = commitTime
	dst.ID = strconv.FormatInt(tx.Version, 10)
	dst.Origin = ""
	type span struct{ key, after, before [2]int }
	spans := make([]span, len(tx.Changes))
	buf := make([]byte, 0, 256*len(tx.Changes))
	mark := func(f func()) [2]int {
		start := len(buf)
		f()
		return [2]int{start, len(buf)}
	}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		img := c.After
		if img == nil {
			img = c.Before
		}
		spans[i].key = mark(func() { buf = img.AppendKey(buf, c.Table) })
		if c.After != nil {
			spans[i].after = mark(func() { buf = c.After.AppendJSON(buf, c.Table) })
		}
		spans[i].before = [2]int{-1, -1}
		if withBefore && c.Before != nil {
			spans[i].before = mark(func() { buf = c.Before.AppendJSON(buf, c.Table) })
		}
	}
	dst.Changes = dst.Changes[:0]
	for i := range tx.Changes {
		c, sp := &tx.Changes[i], spans[i]
		fc := format.Change{Table: c.Table.Name, Op: c.Op, Content: format.ContentJSON,
			Key: buf[sp.key[0]:sp.key[1]:sp.key[1]]}
		if c.After != nil {
			fc.After = buf[sp.after[0]:sp.after[1]:sp.after[1]]
		}
		if sp.before[0] >= 0 {
			fc.Before = buf[sp.before[0]:sp.before[1]:sp.before[1]]
		}
		dst.Changes = append(dst.Changes, fc)
	}
}

// Pacer spaces events evenly at a fixed rate; a Pacer that falls behind
// catches up without sleeping. Not safe for concurrent use.
type Pacer struct {
	interval time.Duration // per event
	next     time.Time
}

// NewPacer returns a Pacer for perSecond events per second; perSecond <= 0
// means no pacing.
func NewPacer(perSecond float64) *Pacer {
	p := &Pacer{}
	if perSecond > 0 {
		p.interval = time.Duration(float64(time.Second) / perSecond)
	}
	return p
}

// Wait blocks until n more events may happen.
func (p *Pacer) Wait(ctx context.Context, n int) error {
	if p.interval == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.IsZero() || now.Sub(p.next) > time.Second {
		p.next = now // start, or too far behind to catch up in a burst
	}
	at := p.next
	p.next = p.next.Add(time.Duration(n) * p.interval)
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// newRand returns the stream's random source.
func newRand(seed uint64, stream int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(stream)+0x9e3779b97f4a7c15))
}
