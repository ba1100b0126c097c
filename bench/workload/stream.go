package workload

import (
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/ferrysync/ferry/format"
)

// key identifies a row of a table (b is 0 for single-column keys).
type key struct{ a, b int64 }

// tableState holds the live rows a stream owns in one table, in insertion
// order: deletes take the oldest (purging old data), updates pick any live
// row. aux is a per-row counter (an order's next line number).
type tableState struct {
	t    *Table
	keys []key
	rows []Row
	aux  []int64
	head int
	next int64 // next id counter (ids are next*Streams + stream + 1)
}

func (ts *tableState) add(k key, r Row, aux int64) {
	ts.keys = append(ts.keys, k)
	ts.rows = append(ts.rows, r)
	ts.aux = append(ts.aux, aux)
}

func (ts *tableState) live() int { return len(ts.keys) - ts.head }

// pick returns the index of a random live row.
func (ts *tableState) pick(rng *rand.Rand) int { return ts.head + rng.IntN(ts.live()) }

func (ts *tableState) popOldest() Row {
	r := ts.rows[ts.head]
	ts.rows[ts.head] = nil
	ts.head++
	if ts.head > 1024 && ts.head > len(ts.keys)/2 {
		ts.keys = append(ts.keys[:0:0], ts.keys[ts.head:]...)
		ts.rows = append(ts.rows[:0:0], ts.rows[ts.head:]...)
		ts.aux = append(ts.aux[:0:0], ts.aux[ts.head:]...)
		ts.head = 0
	}
	return r
}

// Stream generates the transactions of one worker. See the package doc.
type Stream struct {
	cfg     Config
	id      int
	rng     *rand.Rand
	seq     uint64
	cust    tableState
	ord     tableState
	lines   tableState
	stk     tableState
	pad     map[*Table]int // payload length that makes a row RowSize bytes
	corpus  string         // words the payloads are cut from
	initial []TableRows
}

// TableRows are rows of one table.
type TableRows struct {
	Table *Table
	Rows  []Row
}

// NewStream returns stream number stream (0 ≤ stream < cfg.Streams) of the
// workload cfg (defaults applied).
func NewStream(cfg Config, stream int) (*Stream, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if stream < 0 || stream >= cfg.Streams {
		return nil, fmt.Errorf("workload: stream %d of %d", stream, cfg.Streams)
	}
	s := &Stream{
		cfg: cfg,
		id:  stream,
		rng: newRand(cfg.Seed, stream),
		pad: map[*Table]int{},
	}
	for _, p := range []struct {
		ts *tableState
		t  *Table
	}{{&s.cust, customers}, {&s.ord, orders}, {&s.lines, orderLines}, {&s.stk, stock}} {
		p.ts.t = p.t
	}
	s.initPad()
	s.initCorpus()
	s.initial = s.populate()
	return s, nil
}

// Config returns the stream's configuration, defaults applied.
func (s *Stream) Config() Config { return s.cfg }

// Initial returns the rows this stream owns before its first transaction
// (version 0), to load once before running the workload. The slices are
// shared; do not modify them.
func (s *Stream) Initial() []TableRows { return s.initial }

// share returns how many of total rows belong to this stream.
func (s *Stream) share(total int) int {
	n := total / s.cfg.Streams
	if s.id < total%s.cfg.Streams {
		n++
	}
	return n
}

func (s *Stream) newID(ts *tableState) int64 {
	id := ts.next*int64(s.cfg.Streams) + int64(s.id) + 1
	ts.next++
	return id
}

func (s *Stream) populate() []TableRows {
	out := []TableRows{{Table: customers}, {Table: orders}, {Table: orderLines}, {Table: stock}}
	for i := s.share(s.cfg.Customers); i > 0; i-- {
		out[0].Rows = append(out[0].Rows, s.insertCustomer(0))
	}
	for i := s.share(s.cfg.Products); i > 0; i-- {
		out[3].Rows = append(out[3].Rows, s.insertStock(0))
	}
	if s.id == 0 {
		// The hot rows belong to no stream: stream 0 loads them, then
		// every stream updates them through the database (hotUpdate).
		for i := 0; i < s.cfg.HotRows; i++ {
			r := Row{{I: HotSKU(i)}, {I: hotStock}, {I: 0}, {I: 1}, {}}
			r[colPayloadStock].S = s.payload(stock)
			out[3].Rows = append(out[3].Rows, r)
		}
	}
	for i := s.share(s.cfg.Orders); i > 0; i-- {
		o := s.insertOrder(0)
		out[1].Rows = append(out[1].Rows, o)
		idx := len(s.ord.keys) - 1
		for j := 0; j < linesPerOrder; j++ {
			out[2].Rows = append(out[2].Rows, s.insertLine(0, idx))
		}
	}
	return out
}

// Next returns the stream's next transaction.
func (s *Stream) Next() *Tx {
	s.seq++
	tx := &Tx{
		Stream:  s.id,
		Seq:     s.seq,
		Version: int64(s.seq-1)*int64(s.cfg.Streams) + int64(s.id) + 1,
		Changes: make([]Change, 0, s.cfg.TxSize),
	}
	m := s.cfg.Mix
	total := m.Insert + m.Update + m.Delete
	// At most one hot row per transaction, so that transactions wait on
	// each other's locks but never deadlock. It is the last statement, as
	// a checkout decrements stock last.
	hot := s.cfg.HotRows > 0 && s.rng.IntN(100) < s.cfg.HotPct
	n := s.cfg.TxSize
	if hot {
		n--
	}
	for i := 0; i < n; i++ {
		n := s.rng.IntN(total)
		var c Change
		switch {
		case n < m.Insert:
			c = s.insert(tx.Version)
		case n < m.Insert+m.Update:
			c = s.update(tx.Version)
		default:
			c = s.delete(tx.Version)
		}
		tx.Changes = append(tx.Changes, c)
	}
	if hot {
		tx.Changes = append(tx.Changes, s.hotUpdate(tx.Version))
	}
	return tx
}

// hotStock is the quantity hot rows start with and are restocked to.
const hotStock = 1000

// HotSKU returns the sku of hot row i (0 ≤ i < Config.HotRows): above every
// sku a stream owns.
func HotSKU(i int) int64 { return hotSKUBase + int64(i) + 1 }

const hotSKUBase = 1 << 40

// hotUpdate takes one to five items of a random hot row's stock. The new
// row is the database's to compute (other streams update it too): the
// change's After is filled from the statement's RETURNING (SetReturned).
func (s *Stream) hotUpdate(v int64) Change {
	return Change{Table: stock, Op: format.OpUpdate, hot: true,
		hotSKU: HotSKU(s.rng.IntN(s.cfg.HotRows)), hotDelta: int64(1 + s.rng.IntN(5)), hotVersion: v}
}

// insert: a line of an existing order (50 %), a new order (35 %) or a new
// customer (15 %).
func (s *Stream) insert(v int64) Change {
	n := s.rng.IntN(100)
	switch {
	case n < 50 && s.ord.live() > 0:
		return Change{Table: orderLines, Op: format.OpInsert, After: s.insertLine(v, s.ord.pick(s.rng))}
	case n < 85:
		return Change{Table: orders, Op: format.OpInsert, After: s.insertOrder(v)}
	default:
		return Change{Table: customers, Op: format.OpInsert, After: s.insertCustomer(v)}
	}
}

// update: stock quantity (50 %), order status and total (35 %), customer
// balance (15 %).
func (s *Stream) update(v int64) Change {
	n := s.rng.IntN(100)
	switch {
	case n < 50 && s.stk.live() > 0:
		i := s.stk.pick(s.rng)
		old := s.stk.rows[i]
		r := old.clone()
		r[1].I = max(0, r[1].I-int64(1+s.rng.IntN(5)))
		if r[1].I == 0 {
			r[1].I = 1000 // restocked
		}
		r[colVersionStock].I = v
		r[colRevStock].I++
		s.stk.rows[i] = r
		return Change{Table: stock, Op: format.OpUpdate, Before: old, After: r, Set: []int{1, colVersionStock, colRevStock}}
	case n < 85 && s.ord.live() > 0:
		i := s.ord.pick(s.rng)
		old := s.ord.rows[i]
		r := old.clone()
		r[2].S = statuses[s.rng.IntN(len(statuses))]
		r[3].I += int64(s.rng.IntN(5000))
		r[colVersionOrders].I = v
		s.ord.rows[i] = r
		return Change{Table: orders, Op: format.OpUpdate, Before: old, After: r, Set: []int{2, 3, colVersionOrders}}
	case s.cust.live() > 0:
		i := s.cust.pick(s.rng)
		old := s.cust.rows[i]
		r := old.clone()
		r[4].I += int64(s.rng.IntN(20000)) - 10000
		r[colVersionCustomers].I = v
		s.cust.rows[i] = r
		return Change{Table: customers, Op: format.OpUpdate, Before: old, After: r, Set: []int{4, colVersionCustomers}}
	}
	return s.insert(v)
}

// delete: the oldest order line (60 %), order (30 %) or customer (10 %).
func (s *Stream) delete(v int64) Change {
	n := s.rng.IntN(100)
	var ts *tableState
	switch {
	case n < 60 && s.lines.live() > 0:
		ts = &s.lines
	case n < 90 && s.ord.live() > 0:
		ts = &s.ord
	case s.cust.live() > 0:
		ts = &s.cust
	default:
		return s.insert(v)
	}
	return Change{Table: ts.t, Op: format.OpDelete, Before: ts.popOldest()}
}

func (s *Stream) insertCustomer(v int64) Row {
	id := s.newID(&s.cust)
	first, last := firstNames[s.rng.IntN(len(firstNames))], lastNames[s.rng.IntN(len(lastNames))]
	r := Row{{I: id}, {S: first + " " + last}, {S: first + "." + last + strconv.FormatInt(id, 10) + "@example.com"},
		{S: cities[s.rng.IntN(len(cities))]}, {I: int64(s.rng.IntN(100000))}, {I: v}, {}}
	r[6].S = s.payload(customers)
	s.cust.add(key{a: id}, r, 0)
	return r
}

func (s *Stream) insertOrder(v int64) Row {
	id := s.newID(&s.ord)
	cust := int64(s.id + 1)
	if s.cust.live() > 0 {
		cust = s.cust.rows[s.cust.pick(s.rng)][0].I
	}
	r := Row{{I: id}, {I: cust}, {S: "new"}, {I: int64(s.rng.IntN(50000))}, {I: v}, {}}
	r[5].S = s.payload(orders)
	s.ord.add(key{a: id}, r, 1)
	return r
}

// insertLine adds a line to the order at index idx of the orders' state.
func (s *Stream) insertLine(v int64, idx int) Row {
	order := s.ord.keys[idx].a
	no := s.ord.aux[idx]
	s.ord.aux[idx] = no + 1
	sku := int64(s.rng.IntN(max(1, s.share(s.cfg.Products))))*int64(s.cfg.Streams) + int64(s.id) + 1
	r := Row{{I: order}, {I: no}, {I: sku}, {I: int64(1 + s.rng.IntN(5))}, {I: int64(100 + s.rng.IntN(9900))}, {I: v}, {}}
	r[6].S = s.payload(orderLines)
	s.lines.add(key{a: order, b: no}, r, 0)
	return r
}

func (s *Stream) insertStock(v int64) Row {
	sku := s.newID(&s.stk)
	r := Row{{I: sku}, {I: int64(100 + s.rng.IntN(900))}, {I: v}, {I: 1}, {}}
	r[colPayloadStock].S = s.payload(stock)
	s.stk.add(key{a: sku}, r, 0)
	return r
}

// initPad sizes each table's payload so that a typical row is RowSize bytes
// of JSON.
func (s *Stream) initPad() {
	samples := map[*Table]Row{
		customers:  {{I: 1234567}, {S: "Camille Martin"}, {S: "Camille.Martin1234567@example.com"}, {S: "Lyon"}, {I: 12345}, {I: 1234567}, {}},
		orders:     {{I: 1234567}, {I: 1234567}, {S: "shipped"}, {I: 12345}, {I: 1234567}, {}},
		orderLines: {{I: 1234567}, {I: 3}, {I: 12345}, {I: 2}, {I: 1234}, {I: 1234567}, {}},
		stock:      {{I: 12345}, {I: 123}, {I: 1234567}, {I: 1234}, {}},
	}
	for t, r := range samples {
		s.pad[t] = max(0, s.cfg.RowSize-len(r.AppendJSON(nil, t)))
	}
}

// initCorpus builds the text payloads are cut from: words in random
// order, so that payloads compress like real text rather than like random
// bytes.
func (s *Stream) initCorpus() {
	n := 0
	for _, p := range s.pad {
		n = max(n, p)
	}
	b := make([]byte, 0, 64<<10+n)
	for len(b) < cap(b)-16 {
		b = append(b, words[s.rng.IntN(len(words))]...)
		b = append(b, ' ')
	}
	s.corpus = string(b)
}

// payload returns the table's payload length of text from a random place
// of the corpus.
func (s *Stream) payload(t *Table) string {
	n := s.pad[t]
	if n == 0 {
		return ""
	}
	off := s.rng.IntN(len(s.corpus) - n)
	return s.corpus[off : off+n]
}

var (
	statuses   = []string{"new", "paid", "packed", "shipped", "delivered", "returned"}
	firstNames = []string{"Camille", "Louis", "Léa", "Hugo", "Chloé", "Gabriel", "Manon", "Arthur", "Inès", "Jules", "Emma", "Lucas", "Zoé", "Noah", "Alice", "Adam"}
	lastNames  = []string{"Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David"}
	cities     = []string{"Paris", "Lyon", "Marseille", "Lille", "Rouen", "Nantes", "Bordeaux", "Toulouse", "Nice", "Strasbourg", "Rennes", "Grenoble"}
	words      = []string{"fresh", "organic", "bottle", "pack", "carton", "kg", "apple", "pear", "cheese", "bread", "milk", "coffee",
		"tea", "pasta", "rice", "olive", "oil", "sugar", "salt", "flour", "butter", "yogurt", "water", "juice", "wine", "beer",
		"soap", "towel", "shelf", "aisle", "promo", "discount", "loyalty", "card", "store", "delivery", "pickup", "basket",
		"voucher", "return", "refund", "label", "barcode", "supplier", "warehouse", "pallet", "batch", "expiry", "season", "local"}
)
