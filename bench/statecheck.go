package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/jackc/pgx/v5"
)

// The state check is the bench's oracle: a receiver must hold exactly the
// rows the legacy database holds, value for value. Change counts cannot see
// a row whose last two writes arrived in the wrong order; this can.

// maxExamples bounds the differences a check keeps to show.
const maxExamples = 5

// StateCheck is how a receiver's rows compared with the database's tables,
// summed over the checks of a mode (one after every phase with a receiver).
type StateCheck struct {
	Checks int `json:"checks"`
	// Rows compared: every row of the database's tables plus every row
	// only the receiver has.
	Rows int64 `json:"rows"`
	// Differ counts rows missing from the receiver, rows only the
	// receiver has, and rows whose values differ.
	Differ int64 `json:"differ"`
	// Examples are the first few differences.
	Examples []string `json:"examples,omitempty"`
}

func (c *StateCheck) add(d StateCheck) {
	c.Checks += d.Checks
	c.Rows += d.Rows
	c.Differ += d.Differ
	for _, e := range d.Examples {
		if len(c.Examples) < maxExamples {
			c.Examples = append(c.Examples, e)
		}
	}
}

// keyOrder is an ORDER BY that sorts t's rows by their change-file key
// (Row.AppendKey) as the receiver's store scans them.
func keyOrder(t *workload.Table) string { return keyOrderOf(t.KeyNames()) }

// keyOrderOf orders by the change-file key of these key columns.
func keyOrderOf(cols []string) string {
	parts := make([]string, len(cols))
	for i, k := range cols {
		parts[i] = k + "::text"
	}
	// The receiver's order (store.CompareKeys): keys that are canonical
	// decimal integers first, numerically, then the others by their bytes.
	// TestKeyOrderIsTheStores checks that the two agree.
	k := "(" + strings.Join(parts, " || '/' || ") + ")"
	num := k + ` ~ '^(0|[1-9][0-9]{0,254})$'`
	return fmt.Sprintf(`(%s) DESC, CASE WHEN %s THEN length(%s) END, %s COLLATE "C"`, num, num, k, k)
}

// rowScanner pages through a table's rows in key order, and says that
// order: *store.Store, or filesTruth.
type rowScanner interface {
	Scan(table string, prefix, after []byte, limit int) ([]store.Row, bool, error)
	CompareKeys(a, b []byte) int
}

// compareState compares every row of the workload's tables in the database
// of conn with the receiver's store, merging the two in key order: each
// row's change-file key and JSON image (as the legacy writes them) must be
// in the store, byte for byte, and the store must hold nothing else.
func compareState(ctx context.Context, conn *pgx.Conn, st rowScanner) (StateCheck, error) {
	return compareTables(ctx, conn, st, workload.Tables())
}

// compareTables is compareState over the given tables.
func compareTables(ctx context.Context, conn *pgx.Conn, st rowScanner, tables []*workload.Table) (StateCheck, error) {
	c := StateCheck{Checks: 1}
	diff := func(format string, args ...any) {
		c.Differ++
		if len(c.Examples) < maxExamples {
			c.Examples = append(c.Examples, fmt.Sprintf(format, args...))
		}
	}
	for _, t := range tables {
		rows, err := conn.Query(ctx, "SELECT "+strings.Join(t.ColumnNames(), ", ")+" FROM "+t.Name+" ORDER BY "+keyOrder(t))
		if err != nil {
			return c, fmt.Errorf("bench: state check: reading %s: %w", t.Name, err)
		}
		rcv := &storeRows{st: st, table: t.Name}
		row := make(workload.Row, len(t.Columns))
		dest := row.ScanDest(t)
		var key, img, prev []byte
		for first := true; rows.Next(); first = false {
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return c, fmt.Errorf("bench: state check: reading %s: %w", t.Name, err)
			}
			prev = append(prev[:0], key...)
			key, img = row.AppendKey(key[:0], t), row.AppendJSON(img[:0], t)
			if !first && st.CompareKeys(prev, key) >= 0 {
				rows.Close()
				return c, fmt.Errorf("bench: state check: %s: the database returned key %q after %q, out of the receiver's key order: the comparison would be wrong (keyOrder must follow store.CompareKeys)", t.Name, key, prev)
			}
			c.Rows++
			for {
				r, ok, err := rcv.peek()
				if err != nil {
					rows.Close()
					return c, err
				}
				cmp := 1
				if ok {
					cmp = st.CompareKeys(r.Key, key)
				}
				if cmp > 0 {
					diff("%s/%s: missing from the receiver (database: %s)", t.Name, key, img)
					break
				}
				rcv.next()
				if cmp < 0 {
					c.Rows++
					diff("%s/%s: only in the receiver (%s)", t.Name, r.Key, r.Value)
					continue
				}
				if !bytes.Equal(r.Value, img) {
					diff("%s/%s: database %s, receiver %s", t.Name, key, img, r.Value)
				}
				break
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return c, fmt.Errorf("bench: state check: reading %s: %w", t.Name, err)
		}
		for {
			r, ok, err := rcv.peek()
			if err != nil {
				return c, err
			}
			if !ok {
				break
			}
			rcv.next()
			c.Rows++
			diff("%s/%s: only in the receiver (%s)", t.Name, r.Key, r.Value)
		}
	}
	return c, nil
}

// storeRows pages through one table of a store in key order.
type storeRows struct {
	st    rowScanner
	table string
	page  []store.Row
	more  bool
	after []byte
	done  bool
}

const statePage = 5000

func (s *storeRows) peek() (store.Row, bool, error) {
	for len(s.page) == 0 {
		if s.done {
			return store.Row{}, false, nil
		}
		page, more, err := s.st.Scan(s.table, nil, s.after, statePage)
		if err != nil {
			return store.Row{}, false, fmt.Errorf("bench: state check: scanning the receiver's %s: %w", s.table, err)
		}
		s.page, s.done = page, !more
		if len(page) > 0 {
			s.after = page[len(page)-1].Key
		}
	}
	return s.page[0], true, nil
}

func (s *storeRows) next() { s.page = s.page[1:] }

// OrderCheck counts, in a mode's change files, the transactions whose change
// to a row carries an older row version (the rev column in its image) than
// a transaction before it in the files: frames out of the database's commit
// order.
type OrderCheck struct {
	// Frames are the transaction frames read; Versioned the changes
	// carrying a rev.
	Frames    int64 `json:"frames"`
	Versioned int64 `json:"versioned_changes"`
	// OutOfOrder counts transaction frames with at least one change older
	// than what an earlier frame wrote to the same row.
	OutOfOrder int64 `json:"out_of_order_frames"`
}

// checkOrder reads every segment of every source in dir.
func checkOrder(dir string) (OrderCheck, error) {
	var c OrderCheck
	segs, err := format.ListSegments(dir, "")
	if err != nil {
		return c, fmt.Errorf("bench: order check: %w", err)
	}
	// Each source's frames are in its own order: a row's revs must grow
	// within each source (several sources interleave in the database).
	var revs map[string]int64 // table/key → highest rev seen
	source := ""
	var tx format.Tx
	var k []byte
	for _, sf := range segs {
		if revs == nil || sf.Source != source {
			revs, source = map[string]int64{}, sf.Source
		}
		rd, f, err := format.OpenReader(sf.Path, 0)
		if err != nil {
			return c, fmt.Errorf("bench: order check: %w", err)
		}
		for {
			fr, err := rd.Next()
			if err != nil {
				break // the end, or a torn tail: what follows is not the legacy's
			}
			if fr.Type != format.FrameTx {
				continue
			}
			if err := format.DecodeTx(fr.Payload, &tx); err != nil {
				f.Close()
				return c, fmt.Errorf("bench: order check: %s at %d: %w", sf.Path, rd.Offset(), err)
			}
			c.Frames++
			late := false
			for _, ch := range tx.Changes {
				rev, ok := jsonInt(ch.After, `"rev":`)
				if !ok {
					continue
				}
				c.Versioned++
				k = append(append(append(k[:0], ch.Table...), '/'), ch.Key...)
				if last, seen := revs[string(k)]; seen && rev < last {
					late = true
					continue
				}
				revs[string(k)] = rev
			}
			if late {
				c.OutOfOrder++
			}
		}
		f.Close()
	}
	return c, nil
}

// jsonInt finds the integer after field (`"rev":`) in a flat JSON object.
func jsonInt(b []byte, field string) (int64, bool) {
	i := bytes.Index(b, []byte(field))
	if i < 0 {
		return 0, false
	}
	var v int64
	n := 0
	for _, c := range b[i+len(field):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
		n++
	}
	return v, n > 0
}
