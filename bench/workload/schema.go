package workload

import (
	"strconv"
	"strings"
)

// ColumnType is the SQL type of a column: every column is a bigint or text.
type ColumnType uint8

// Column types.
const (
	Int  ColumnType = iota // bigint
	Text                   // text
)

// Column is one column of a table.
type Column struct {
	Name string
	Type ColumnType
}

// Table describes one table of the retail schema. Its first KeyLen columns
// are the primary key.
type Table struct {
	Name    string
	Columns []Column
	KeyLen  int
	// Indexes are extra secondary indexes, as lists of column names.
	Indexes [][]string
}

// The retail schema. The version column of every table holds the Version of
// the transaction that last wrote the row (an "updated by" stamp many legacy
// schemas have); the bench uses it to follow a transaction end to end. It is
// not a row version: two streams' transactions commit in either order. The
// stock table's rev column is one: every UPDATE sets rev = rev + 1 under the
// row's lock, so it grows in the database's commit order (from 1, like
// format.Change.Version).
var (
	customers = &Table{Name: "customers", KeyLen: 1, Columns: []Column{
		{"id", Int}, {"name", Text}, {"email", Text}, {"city", Text}, {"balance_cents", Int}, {"version", Int}, {"payload", Text},
	}}
	orders = &Table{Name: "orders", KeyLen: 1, Columns: []Column{
		{"id", Int}, {"customer_id", Int}, {"status", Text}, {"total_cents", Int}, {"version", Int}, {"payload", Text},
	}, Indexes: [][]string{{"customer_id"}}}
	orderLines = &Table{Name: "order_lines", KeyLen: 2, Columns: []Column{
		{"order_id", Int}, {"line_no", Int}, {"sku", Int}, {"qty", Int}, {"price_cents", Int}, {"version", Int}, {"payload", Text},
	}}
	stock = &Table{Name: "stock", KeyLen: 1, Columns: []Column{
		{"sku", Int}, {"qty", Int}, {"version", Int}, {"rev", Int}, {"payload", Text},
	}}
)

// Column positions the generator writes to.
const (
	colVersionCustomers = 5
	colVersionOrders    = 4
	colVersionLines     = 5
	colVersionStock     = 2
	colRevStock         = 3
	colPayloadStock     = 4
)

// Tables returns the tables of the retail schema, in creation order. The
// returned values are shared: do not modify them.
func Tables() []*Table { return []*Table{customers, orders, orderLines, stock} }

// VersionColumn returns the index of t's version column.
func (t *Table) VersionColumn() int {
	for i, c := range t.Columns {
		if c.Name == "version" {
			return i
		}
	}
	return -1
}

// RevColumn returns the index of t's row version column (rev), -1 if it
// has none.
func (t *Table) RevColumn() int {
	for i, c := range t.Columns {
		if c.Name == "rev" {
			return i
		}
	}
	return -1
}

// DDL returns the statements that create the schema in the current
// database's public schema.
func DDL() []string {
	var out []string
	for _, t := range Tables() {
		out = append(out, t.CreateSQL())
		for i, idx := range t.Indexes {
			out = append(out, "CREATE INDEX "+t.Name+"_idx"+strconv.Itoa(i)+" ON "+t.Name+" ("+strings.Join(idx, ", ")+")")
		}
	}
	return out
}

// CreateSQL returns t's CREATE TABLE statement.
func (t *Table) CreateSQL() string {
	var b strings.Builder
	b.WriteString("CREATE TABLE " + t.Name + " (")
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Name)
		if c.Type == Int {
			b.WriteString(" bigint NOT NULL")
		} else {
			b.WriteString(" text NOT NULL")
		}
	}
	b.WriteString(", PRIMARY KEY (" + strings.Join(t.KeyNames(), ", ") + "))")
	return b.String()
}

// ColumnNames returns the names of t's columns.
func (t *Table) ColumnNames() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

// KeyNames returns the names of t's key columns.
func (t *Table) KeyNames() []string { return t.ColumnNames()[:t.KeyLen] }
