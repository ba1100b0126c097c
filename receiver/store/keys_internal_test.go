package store

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
)

// withRowKeys creates a new store with row key encoding e (rowKeysBytes:
// as stores made before the encoding existed).
func withRowKeys(e rowKeys) Option {
	return func(o *options) error { o.rowKeys = e; return nil }
}

// rowKeyCases mixes numeric keys of several lengths with keys that only
// look numeric (leading zeros, signs, spaces), text and the empty key.
var rowKeyCases = []string{
	"0", "1", "2", "9", "10", "11", "19", "99", "100", "101", "120", "1207", "5", "50", "500", "5000", "50001",
	"12345678901234567890123", "00", "007", "01", "-1", "+1", "1 ", " 1", "1.5", "1e3", "1/2", "12/3", "a", "abc", "a1",
	"", "\x00", "\x01\x02", "\xff", "9" + strings.Repeat("9", 254), "9" + strings.Repeat("9", 255),
}

func TestNumericKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"0", true}, {"7", true}, {"10", true}, {"1207", true}, {strings.Repeat("9", 255), true},
		{"", false}, {"00", false}, {"01", false}, {"-1", false}, {"+1", false}, {"1.0", false},
		{"1 ", false}, {"١", false}, {strings.Repeat("9", 256), false}, {"1/2", false},
	} {
		if got := numericKey([]byte(tc.key)); got != tc.want {
			t.Errorf("numericKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}

// TestRowKeyEncoding: the encoding round-trips, is injective, orders keys
// as compare does, keeps numeric keys in numeric order, and is the bytes
// themselves for stores made before it.
func TestRowKeyEncoding(t *testing.T) {
	for _, e := range []rowKeys{rowKeysBytes, rowKeysNumeric} {
		t.Run(fmt.Sprint(e), func(t *testing.T) {
			enc := map[string]string{}
			for _, k := range rowKeyCases {
				b := e.appendKey(nil, []byte(k))
				if prev, dup := enc[string(b)]; dup {
					t.Fatalf("%q and %q encode alike", prev, k)
				}
				enc[string(b)] = k
				got, err := e.decodeKey(b)
				if err != nil || string(got) != k {
					t.Fatalf("decode(encode(%q)) = %q, %v", k, got, err)
				}
				if e == rowKeysBytes && string(b) != k {
					t.Fatalf("bytes encoding of %q is %q", k, b)
				}
			}
			for _, a := range rowKeyCases {
				for _, b := range rowKeyCases {
					want := bytes.Compare(e.appendKey(nil, []byte(a)), e.appendKey(nil, []byte(b)))
					if got := e.compare([]byte(a), []byte(b)); got != want {
						t.Fatalf("compare(%q, %q) = %d, the encodings compare %d", a, b, got, want)
					}
				}
			}
			if e == rowKeysNumeric {
				var nums []string
				for i := 0; i <= 2000; i++ {
					nums = append(nums, fmt.Sprint(i))
				}
				slices.SortFunc(nums, func(a, b string) int { return e.compare([]byte(a), []byte(b)) })
				for i, k := range nums {
					if k != fmt.Sprint(i) {
						t.Fatalf("numeric keys out of numeric order at %d: %q", i, k)
					}
				}
			}
		})
	}
	for _, bad := range []string{"", "\x03x", "\x01\x02" + "1", "\x01\x01" + "12"} {
		if _, err := rowKeysNumeric.decodeKey([]byte(bad)); err == nil {
			t.Errorf("decodeKey(%q) accepted a corrupt key", bad)
		}
	}
}

// TestScanPrefixes: every prefix and cursor returns exactly the rows whose
// key has the prefix and follows the cursor, in the encoding's order, page
// by page, on both encodings; numeric keys come in numeric order.
func TestScanPrefixes(t *testing.T) {
	var keys []string
	for _, k := range rowKeyCases {
		if k != "" { // no change has an empty key
			keys = append(keys, k)
		}
	}
	for i := 0; i < 300; i += 7 {
		keys = append(keys, fmt.Sprint(i), fmt.Sprint(i*1013), fmt.Sprintf("k%d", i))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	prefixes := []string{"", "0", "1", "12", "5", "9", "99", "00", "k", "k1", "a", "-", "\x00", "\xff", "1/", "7"}
	for _, e := range []rowKeys{rowKeysBytes, rowKeysNumeric} {
		t.Run(fmt.Sprint(e), func(t *testing.T) {
			st, err := Open("db", WithFS(vfs.NewMem()), withRowKeys(e))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if st.rk != e {
				t.Fatalf("store opened with encoding %d, want %d", st.rk, e)
			}
			b := st.NewBatch()
			defer b.Close()
			tx := &format.Tx{CommitTime: time.Now().UnixNano()}
			for _, k := range keys {
				tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpUpsert, Key: []byte(k), After: []byte(`{}`)})
			}
			// A neighbouring table's rows must never show.
			tx.Changes = append(tx.Changes, format.Change{Table: "t2", Op: format.OpUpsert, Key: []byte("1"), After: []byte(`{}`)},
				format.Change{Table: "u", Op: format.OpUpsert, Key: []byte("1"), After: []byte(`{}`)})
			frame, err := format.AppendTx(nil, tx)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.ApplyTx("s", 1, 45, 45+int64(len(frame)), 1, tx, frame); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			order := slices.Clone(keys)
			slices.SortFunc(order, func(a, b string) int { return e.compare([]byte(a), []byte(b)) })
			for _, p := range prefixes {
				var want []string
				for _, k := range order {
					if strings.HasPrefix(k, p) {
						want = append(want, k)
					}
				}
				for _, limit := range []int{1, 3, 1000} {
					var got []string
					var after []byte
					for page := 0; ; page++ {
						rows, more, err := st.Scan("t", []byte(p), after, limit)
						if err != nil {
							t.Fatal(err)
						}
						for _, r := range rows {
							got = append(got, string(r.Key))
						}
						if !more {
							break
						}
						if len(rows) == 0 || page > len(keys) {
							t.Fatalf("prefix %q: page %d empty but more", p, page)
						}
						after = rows[len(rows)-1].Key
					}
					if !slices.Equal(got, want) {
						t.Fatalf("prefix %q limit %d: got %q, want %q", p, limit, got, want)
					}
				}
			}
			for _, k := range keys {
				if r, ok, err := st.Get("t", []byte(k)); err != nil || !ok || string(r.Key) != k {
					t.Fatalf("Get(%q) = %q, %v, %v", k, r.Key, ok, err)
				}
			}
		})
	}
}

// TestRowKeysKeptAcrossReopen: a store keeps the encoding it was created
// with; one made before the encoding existed (no record, rows held) stays
// on the bytes.
func TestRowKeysKeptAcrossReopen(t *testing.T) {
	for _, e := range []rowKeys{rowKeysBytes, rowKeysNumeric} {
		t.Run(fmt.Sprint(e), func(t *testing.T) {
			fs := vfs.NewMem()
			st, err := Open("db", WithFS(fs), withRowKeys(e))
			if err != nil {
				t.Fatal(err)
			}
			b := st.NewBatch()
			tx := &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{
				{Table: "t", Op: format.OpUpsert, Key: []byte("10"), After: []byte(`{"v":10}`)},
				{Table: "t", Op: format.OpUpsert, Key: []byte("9"), After: []byte(`{"v":9}`)},
			}}
			frame, _ := format.AppendTx(nil, tx)
			if err := b.ApplyTx("s", 1, 45, 45+int64(len(frame)), 1, tx, frame); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			b.Close()
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			// Reopened without asking: the encoding it was made with.
			st, err = Open("db", WithFS(fs))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if st.rk != e {
				t.Fatalf("reopened with encoding %d, created with %d", st.rk, e)
			}
			rows, _, err := st.Scan("t", nil, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, string(r.Key)+"="+string(r.Value))
			}
			want := []string{`10={"v":10}`, `9={"v":9}`}
			if e == rowKeysNumeric {
				want = []string{`9={"v":9}`, `10={"v":10}`}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("rows %q, want %q", got, want)
			}
		})
	}
}

// TestIntegerKeysBulkLoaded: a load of an integer-keyed table, chunks in
// the database's (numeric) order across key lengths, is ingested whole as
// sstables on a store with numeric keys. On the bytes encoding the chunks'
// ranges overlap ("10".."99" spans "2".."9") and most go through the batch:
// why the encoding exists.
func TestIntegerKeysBulkLoaded(t *testing.T) {
	const rows, per = 12000, 1000
	for _, e := range []rowKeys{rowKeysBytes, rowKeysNumeric} {
		t.Run(fmt.Sprint(e), func(t *testing.T) {
			st, err := Open("db", WithFS(vfs.NewMem()), withRowKeys(e))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			b := st.NewBatch()
			defer b.Close()
			for c := 0; c*per < rows; c++ {
				tx := &format.Tx{ID: "L", CommitTime: time.Now().UnixNano()}
				for k := c*per + 1; k <= (c+1)*per; k++ {
					tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpUpsert, Key: fmt.Append(nil, k), After: fmt.Appendf(nil, `{"id":%d}`, k)})
				}
				frame, err := format.AppendTx(nil, tx)
				if err != nil {
					t.Fatal(err)
				}
				b.SetMessageSeq(uint64(c + 1))
				if _, err := b.ApplyLoad(&LoadChunk{Load: "L", Table: "t", Chunk: uint64(c), Tx: tx, Frame: frame, RawLen: len(frame)}); err != nil {
					t.Fatal(err)
				}
				if err := b.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			l, _, err := st.Load("L")
			if err != nil {
				t.Fatal(err)
			}
			if l.Rows != rows {
				t.Fatalf("load applied %d rows, want %d", l.Rows, rows)
			}
			if e == rowKeysNumeric && l.Bulk != rows {
				t.Fatalf("numeric keys: %d of %d rows ingested in bulk", l.Bulk, rows)
			}
			if e == rowKeysBytes && l.Bulk >= rows/2 {
				t.Fatalf("bytes keys: %d of %d rows ingested: the test no longer shows the overlap", l.Bulk, rows)
			}
			for _, k := range []int{1, 9, 10, 999, 1000, 1001, rows} {
				r, ok, err := st.Get("t", fmt.Append(nil, k))
				if err != nil || !ok || string(r.Value) != fmt.Sprintf(`{"id":%d}`, k) {
					t.Fatalf("row %d: %q %v %v", k, r.Value, ok, err)
				}
			}
		})
	}
}
