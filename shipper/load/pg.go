package load

import (
	"context"
	"errors"
	"fmt"
	"github.com/ferrysync/ferry/format/jsonl"
	"strconv"
	"strings"

	fload "github.com/ferrysync/ferry/format/load"
	"github.com/jackc/pgx/v5"
)

// ErrNoKey means a table without a primary key and without --key.
var ErrNoKey = errors.New("load: table has no primary key")

// colKind says how a column's text is rendered in a row image.
type colKind uint8

const (
	kindString colKind = iota // a JSON string of the text output
	kindNumber                // a JSON number (NaN, infinities: a string)
	kindBool                  // true / false
	kindJSON                  // embedded as it is
)

// PostgreSQL type oids the image renders other than as strings.
func kindOf(oid uint32) colKind {
	switch oid {
	case 20, 21, 23, 26, 700, 701, 1700: // int8, int2, int4, oid, float4, float8, numeric
		return kindNumber
	case 16:
		return kindBool
	case 114, 3802:
		return kindJSON
	}
	return kindString
}

type pgColumn struct {
	name string
	typ  string // format_type, for casts
	kind colKind
}

// pgSource reads a PostgreSQL table in key order.
type pgSource struct {
	url      string
	conn     *pgx.Conn
	t        Table
	ident    string // the quoted table name
	cols     []pgColumn
	key      []int // indexes of the key columns in cols, key order
	version  int   // index of the version column, -1 if none
	estimate int64
	upper    fload.Key
	selList  string
	orderBy  string
	// tuple is the key column list "(a, b)" (or "a").
	tuple string
}

// openPG connects to url and reads table t's columns and key.
func openPG(ctx context.Context, url string, t Table) (*pgSource, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("load: connecting to PostgreSQL: %w", err)
	}
	s := &pgSource{url: url, conn: conn, t: t, version: -1}
	if err := s.describe(ctx); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *pgSource) close() { s.conn.Close(context.Background()) }

func (s *pgSource) describe(ctx context.Context) error {
	s.ident = pgx.Identifier(strings.Split(s.t.Name, ".")).Sanitize()
	var relid uint32
	if err := s.conn.QueryRow(ctx, "SELECT $1::regclass::oid", s.ident).Scan(&relid); err != nil {
		return fmt.Errorf("load: table %s: %w", s.t.Name, err)
	}
	rows, err := s.conn.Query(ctx, `SELECT attname, atttypid, format_type(atttypid, atttypmod)
		FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, relid)
	if err != nil {
		return fmt.Errorf("load: reading the columns of %s: %w", s.t.Name, err)
	}
	for rows.Next() {
		var c pgColumn
		var oid uint32
		if err := rows.Scan(&c.name, &oid, &c.typ); err != nil {
			return fmt.Errorf("load: reading the columns of %s: %w", s.t.Name, err)
		}
		c.kind = kindOf(oid)
		s.cols = append(s.cols, c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load: reading the columns of %s: %w", s.t.Name, err)
	}
	keyNames := s.t.Key
	if len(keyNames) == 0 {
		rows, err := s.conn.Query(ctx, `SELECT a.attname FROM pg_index i
			CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, relid)
		if err != nil {
			return fmt.Errorf("load: reading the primary key of %s: %w", s.t.Name, err)
		}
		keyNames, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("load: reading the primary key of %s: %w", s.t.Name, err)
		}
		if len(keyNames) == 0 {
			return fmt.Errorf("%w: %s has none; name its key columns with --key COL[,COL...] (or --key %s=COL[,COL...] with several tables): unique, not null, the key the legacy's change files use",
				ErrNoKey, s.t.Name, s.t.Name)
		}
	}
	if len(keyNames) > fload.MaxKeyColumns {
		return fmt.Errorf("load: table %s: %d key columns (max %d)", s.t.Name, len(keyNames), fload.MaxKeyColumns)
	}
	find := func(name string) int {
		for i, c := range s.cols {
			if c.name == name {
				return i
			}
		}
		return -1
	}
	var tuple, order []string
	for _, k := range keyNames {
		i := find(k)
		if i < 0 {
			return fmt.Errorf("load: table %s has no column %q (--key)", s.t.Name, k)
		}
		s.key = append(s.key, i)
		q := pgx.Identifier{k}.Sanitize()
		tuple = append(tuple, q)
		order = append(order, q)
	}
	s.t.Key = keyNames
	if s.t.VersionColumn != "" {
		if s.version = find(s.t.VersionColumn); s.version < 0 {
			return fmt.Errorf("load: table %s has no column %q (--version-column)", s.t.Name, s.t.VersionColumn)
		}
	}
	s.tuple = strings.Join(tuple, ", ")
	if len(tuple) > 1 {
		s.tuple = "(" + s.tuple + ")"
	}
	s.orderBy = strings.Join(order, ", ")
	sel := make([]string, len(s.cols))
	for i, c := range s.cols {
		sel[i] = pgx.Identifier{c.name}.Sanitize()
	}
	s.selList = strings.Join(sel, ", ")
	return nil
}

// bound returns the SQL of the key tuple's comparison with parameters from
// $n on, casting each to its column's type.
func (s *pgSource) bound(op string, n int) string {
	ps := make([]string, len(s.key))
	for i, k := range s.key {
		ps[i] = "$" + strconv.Itoa(n+i) + "::" + s.cols[k].typ
	}
	p := strings.Join(ps, ", ")
	if len(ps) > 1 {
		p = "(" + p + ")"
	}
	return s.tuple + " " + op + " " + p
}

// where returns the WHERE clause of keys after lo (from lo on, if incl)
// and up to hi, and its arguments.
func (s *pgSource) where(lo fload.Key, incl bool, hi fload.Key) (string, []any) {
	var conds []string
	var args []any
	add := func(op string, k fload.Key) {
		conds = append(conds, s.bound(op, len(args)+1))
		for _, c := range k {
			args = append(args, string(c))
		}
	}
	if lo != nil {
		if incl {
			add(">=", lo)
		} else {
			add(">", lo)
		}
	}
	if hi != nil {
		add("<=", hi)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func (s *pgSource) checkTuple(what string, k []string) (fload.Key, error) {
	if k == nil {
		return nil, nil
	}
	if len(k) != len(s.key) {
		return nil, fmt.Errorf("load: table %s: %s has %d columns, the key %v has %d", s.t.Name, what, len(k), s.t.Key, len(s.key))
	}
	return fload.KeyOf(k...), nil
}

// plan reads the fixed upper bound (the largest key in the range) and an
// estimate of the rows.
func (s *pgSource) plan(ctx context.Context) (plan, error) {
	from, err := s.checkTuple("--from", s.t.From)
	if err != nil {
		return plan{}, err
	}
	to, err := s.checkTuple("--to", s.t.To)
	if err != nil {
		return plan{}, err
	}
	p := plan{input: "postgresql", keyColumns: s.t.Key, versionColumn: s.t.VersionColumn, from: from, to: to, estimate: -1}
	where, args := s.where(from, true, to)
	desc := make([]string, len(s.key))
	keys := make([]string, len(s.key))
	for i, k := range s.key {
		keys[i] = pgx.Identifier{s.cols[k].name}.Sanitize()
		desc[i] = keys[i] + " DESC"
	}
	q := "SELECT " + strings.Join(keys, ", ") + " FROM " + s.ident + where + " ORDER BY " + strings.Join(desc, ", ") + " LIMIT 1"
	res := s.conn.PgConn().ExecParams(ctx, q, textArgs(args), nil, nil, nil)
	for res.NextRow() {
		p.upper = make(fload.Key, len(s.key))
		for i, v := range res.Values() {
			p.upper[i] = append([]byte(nil), v...)
		}
	}
	if _, err := res.Close(); err != nil {
		return plan{}, fmt.Errorf("load: reading the largest key of %s: %w", s.t.Name, err)
	}
	if from == nil && to == nil {
		var n float64
		if err := s.conn.QueryRow(ctx, "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", s.ident).Scan(&n); err != nil {
			return plan{}, fmt.Errorf("load: estimating the rows of %s: %w", s.t.Name, err)
		}
		p.estimate = int64(n)
	}
	if p.estimate < 0 && p.upper != nil {
		// Never analysed (or a key range): count.
		if err := s.conn.QueryRow(ctx, "SELECT count(*) FROM "+s.ident+where, args...).Scan(&p.estimate); err != nil {
			return plan{}, fmt.Errorf("load: counting the rows of %s: %w", s.t.Name, err)
		}
	}
	if p.upper == nil {
		p.estimate = 0
	}
	return p, nil
}

func textArgs(args []any) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a.(string))
	}
	return out
}

// chunk reads up to n rows with keys in (lo, upper], in key order, in one
// statement (one snapshot, taken when the statement starts), calling emit
// for each. It returns the number of rows read.
func (s *pgSource) chunk(ctx context.Context, lo, upper fload.Key, n int, emit func(r *row) error) (int, error) {
	if s.conn.IsClosed() {
		// A chunk interrupted by a cancelled context closes the
		// connection (pgconn): open another.
		conn, err := pgx.Connect(ctx, s.url)
		if err != nil {
			return 0, fmt.Errorf("load: connecting to PostgreSQL again: %w", err)
		}
		s.conn = conn
	}
	// The first chunk of a key range starts at --from, inclusive.
	where, args := s.where(lo, false, upper)
	if lo == nil && s.t.From != nil {
		where, args = s.where(fload.KeyOf(s.t.From...), true, upper)
	}
	q := "SELECT " + s.selList + " FROM " + s.ident + where + " ORDER BY " + s.orderBy + " LIMIT " + strconv.Itoa(n)
	res := s.conn.PgConn().ExecParams(ctx, q, textArgs(args), nil, nil, nil)
	var r row
	r.tuple = make(fload.Key, len(s.key))
	count := 0
	var emitErr error
	for res.NextRow() {
		vals := res.Values()
		if len(vals) != len(s.cols) {
			emitErr = fmt.Errorf("load: %s: a row of %d columns, %d expected", s.t.Name, len(vals), len(s.cols))
			break
		}
		if emitErr = s.render(&r, vals); emitErr != nil {
			break
		}
		if emitErr = emit(&r); emitErr != nil {
			break
		}
		count++
	}
	_, err := res.Close()
	if emitErr != nil {
		return count, emitErr
	}
	if err != nil {
		return count, fmt.Errorf("load: reading %s after key %s: %w", s.t.Name, lo.Strings(), err)
	}
	return count, nil
}

// render builds r's key, tuple, image and version from a row's texts. r's
// buffers are reused: emit copies what it keeps.
func (s *pgSource) render(r *row, vals [][]byte) error {
	r.key = r.key[:0]
	for i, k := range s.key {
		if vals[k] == nil {
			return fmt.Errorf("load: %s: key column %s is NULL (the key must be unique and not null)", s.t.Name, s.cols[k].name)
		}
		if i > 0 {
			r.key = append(r.key, s.t.KeySep...)
		}
		r.key = append(r.key, vals[k]...)
		r.tuple[i] = vals[k]
	}
	img := append(r.image[:0], '{')
	for i, c := range s.cols {
		if i > 0 {
			img = append(img, ',')
		}
		img = jsonl.AppendString(img, c.name)
		img = append(img, ':')
		img = appendValue(img, vals[i], c.kind)
	}
	r.image = append(img, '}')
	r.version = 0
	if s.version >= 0 && vals[s.version] != nil {
		v, err := strconv.ParseUint(string(vals[s.version]), 10, 64)
		if err != nil {
			return fmt.Errorf("load: %s key %s: version column %s holds %q, not a non-negative integer", s.t.Name, r.key, s.t.VersionColumn, vals[s.version])
		}
		r.version = v
	}
	return nil
}

// appendValue renders one column's text as a JSON value.
func appendValue(dst, v []byte, k colKind) []byte {
	if v == nil {
		return append(dst, "null"...)
	}
	switch k {
	case kindNumber:
		if c := v[len(v)-1]; c < '0' || c > '9' { // NaN, Infinity, -Infinity
			return jsonl.AppendString(dst, v)
		}
		return append(dst, v...)
	case kindBool:
		if len(v) == 1 && v[0] == 't' {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case kindJSON:
		return append(dst, v...)
	}
	return jsonl.AppendString(dst, v)
}
