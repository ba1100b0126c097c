package workload

import (
	"github.com/ferrysync/ferry/format/jsonl"
	"strconv"
)

// Value is one column value: I for Int columns, S for Text columns.
type Value struct {
	I int64
	S string
}

// Row is a table row, one Value per column in the table's column order.
type Row []Value

// Args returns the row's values as SQL arguments (int64 or string).
func (r Row) Args(t *Table) []any {
	out := make([]any, len(r))
	for i, v := range r {
		out[i] = r.arg(t, i, v)
	}
	return out
}

func (r Row) arg(t *Table, i int, v Value) any {
	if t.Columns[i].Type == Int {
		return v.I
	}
	return v.S
}

// ScanDest returns pointers to r's values for a driver's Scan of a row of t
// (its columns in order): *int64 for Int columns, *string for Text. r must
// have len(t.Columns) values.
func (r Row) ScanDest(t *Table) []any {
	out := make([]any, len(t.Columns))
	for i, c := range t.Columns {
		if c.Type == Int {
			out[i] = &r[i].I
		} else {
			out[i] = &r[i].S
		}
	}
	return out
}

// AppendKey appends the row's key as the change-file key: the key columns'
// values joined by '/' (order_lines "1207/3").
func (r Row) AppendKey(dst []byte, t *Table) []byte {
	for i := 0; i < t.KeyLen; i++ {
		if i > 0 {
			dst = append(dst, '/')
		}
		if t.Columns[i].Type == Int {
			dst = strconv.AppendInt(dst, r[i].I, 10)
		} else {
			dst = append(dst, r[i].S...)
		}
	}
	return dst
}

// AppendJSON appends the row as a JSON object keyed by column name.
func (r Row) AppendJSON(dst []byte, t *Table) []byte {
	dst = append(dst, '{')
	for i, v := range r {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, t.Columns[i].Name...)
		dst = append(dst, '"', ':')
		if t.Columns[i].Type == Int {
			dst = strconv.AppendInt(dst, v.I, 10)
		} else {
			dst = jsonl.AppendString(dst, v.S)
		}
	}
	return append(dst, '}')
}

func (r Row) clone() Row { return append(Row(nil), r...) }
