package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

// vchange is one change of a guard test: source, key, value (empty: a
// delete) and legacy row version (0: none).
type vchange struct {
	src   string
	key   string
	value string
	ver   uint64
}

// chain applies transactions of several sources, each source's frames one
// after the other in segment 1, committing as commit says.
type chain struct {
	t   *testing.T
	b   *store.Batch
	off map[string]int64
	seq uint64
}

func newChain(t *testing.T, b *store.Batch) *chain {
	return &chain{t: t, b: b, off: map[string]int64{}}
}

// apply applies one transaction of c's changes (all of one source).
func (ch *chain) apply(cs ...vchange) {
	ch.t.Helper()
	tx := &format.Tx{CommitTime: time.Now().UnixNano()}
	for _, c := range cs {
		fc := format.Change{Table: "t", Op: format.OpUpsert, Key: []byte(c.key), After: []byte(c.value), Version: c.ver}
		if c.value == "" {
			fc.Op, fc.After = format.OpDelete, nil
		}
		tx.Changes = append(tx.Changes, fc)
	}
	frame, err := format.AppendTx(nil, tx)
	if err != nil {
		ch.t.Fatal(err)
	}
	src := cs[0].src
	off := ch.off[src]
	if off == 0 {
		off = 45
	}
	end := off + int64(len(frame))
	ch.seq++
	if err := ch.b.ApplyTx(src, 1, off, end, ch.seq, tx, frame); err != nil {
		ch.t.Fatalf("ApplyTx %s at %d: %v", src, off, err)
	}
	ch.off[src] = end
}

// TestRowGuard: the merge rule, with the row to compare against in each of
// the places a lookup finds it: buffered in the same batch, in the commit
// in flight, in Pebble.
func TestRowGuard(t *testing.T) {
	cases := []struct {
		name   string
		txs    [][]vchange
		want   map[string]string // key -> value; absent: no row (deleted or never written)
		stale  uint64
		cross  uint64
		logged int // changes in the change log
	}{
		{name: "one source, no versions: last write wins",
			txs:  [][]vchange{{{"A", "k", "1", 0}}, {{"A", "k", "2", 0}}, {{"A", "j", "1", 0}, {"A", "k", "3", 0}}},
			want: map[string]string{"k": "3", "j": "1"}, logged: 4},
		{name: "versions decide, not arrival",
			txs:  [][]vchange{{{"A", "k", "v1", 1}}, {{"B", "k", "v3", 3}}, {{"A", "k", "v2", 2}}},
			want: map[string]string{"k": "v3"}, stale: 1, logged: 2},
		{name: "equal version is already applied",
			txs:  [][]vchange{{{"A", "k", "a5", 5}}, {{"B", "k", "b5", 5}}},
			want: map[string]string{"k": "a5"}, stale: 1, logged: 1},
		{name: "a versioned delete keeps an older write out",
			txs:  [][]vchange{{{"A", "k", "v1", 1}}, {{"B", "k", "", 3}}, {{"A", "k", "v2", 2}}},
			want: map[string]string{}, stale: 1, logged: 2},
		{name: "a newer write after a delete recreates the row",
			txs:  [][]vchange{{{"B", "k", "", 3}}, {{"A", "k", "v4", 4}}},
			want: map[string]string{"k": "v4"}, logged: 2},
		{name: "stale change inside a transaction: the others apply",
			txs:  [][]vchange{{{"B", "k", "b9", 9}}, {{"A", "j", "a1", 1}, {"A", "k", "a2", 2}, {"A", "i", "a1", 1}}},
			want: map[string]string{"k": "b9", "j": "a1", "i": "a1"}, stale: 1, logged: 3},
		{name: "two sources without versions: arrival, counted",
			txs:  [][]vchange{{{"A", "k", "a", 0}}, {{"B", "k", "b", 0}}, {{"B", "j", "b", 0}}},
			want: map[string]string{"k": "b", "j": "b"}, cross: 1, logged: 3},
		{name: "a version on one side only: arrival, counted",
			txs:  [][]vchange{{{"A", "k", "a", 0}}, {{"B", "k", "b", 7}}, {{"A", "k", "a2", 0}}},
			want: map[string]string{"k": "a2"}, cross: 2, logged: 3},
	}
	modes := []string{"same batch", "in flight", "committed"}
	for _, tc := range cases {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				st := open(t, vfs.NewMem())
				defer st.Close()
				b := st.NewBatch()
				defer b.Close()
				ch := newChain(t, b)
				for _, x := range tc.txs {
					ch.apply(x...)
					var err error
					switch mode {
					case "in flight":
						err = b.CommitAsync()
					case "committed":
						err = b.Commit()
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				if err := b.Commit(); err != nil {
					t.Fatal(err)
				}
				for _, k := range []string{"i", "j", "k"} {
					row, ok, err := st.Get("t", []byte(k))
					if err != nil {
						t.Fatal(err)
					}
					want, wok := tc.want[k]
					if ok != wok || (ok && string(row.Value) != want) {
						t.Errorf("row %s: %q (present %v), want %q (present %v)", k, row.Value, ok, want, wok)
					}
				}
				rows, _, err := st.Scan("t", nil, nil, 10)
				if err != nil || len(rows) != len(tc.want) {
					t.Errorf("scan: %d rows (%v), want %d", len(rows), err, len(tc.want))
				}
				g := st.GuardStats()
				if g.Stale != tc.stale || g.UnversionedCrossSource != tc.cross {
					t.Errorf("stale %d cross %d, want %d and %d", g.Stale, g.UnversionedCrossSource, tc.stale, tc.cross)
				}
				// The change log holds what was applied, with dense ids.
				cs, err := st.Changes(0, 100)
				if err != nil || len(cs) != tc.logged {
					t.Fatalf("change log: %d changes (%v), want %d", len(cs), err, tc.logged)
				}
				last := map[string]store.Change{}
				for i, c := range cs {
					if c.ID != uint64(i+1) {
						t.Fatalf("change %d has id %d", i, c.ID)
					}
					last[string(c.Key)] = c
				}
				for k, want := range tc.want {
					if c := last[k]; string(c.After) != want {
						t.Errorf("last logged change of %s: %q, want %q", k, c.After, want)
					}
				}
				if f, l := st.ChangeRange(); l != uint64(tc.logged) || f != 1 && tc.logged > 0 {
					t.Errorf("change range %d..%d, want 1..%d", f, l, tc.logged)
				}
			})
		}
	}
}

// TestTombstoneRetention: a delete's tombstone keeps an older change out
// while it is held; once purged the older change recreates the row (what
// the retention bounds). A tombstone overwritten by a newer write is never
// purged with the row.
func TestTombstoneRetention(t *testing.T) {
	for _, tc := range []struct {
		retention time.Duration
		overwrite bool
		want      string // the row afterwards ("": none)
		held      int64
	}{
		{retention: store.DefaultTombstoneRetention, want: "", held: 1},
		{retention: time.Nanosecond, want: "late", held: 0},
		{retention: time.Nanosecond, overwrite: true, want: "v9", held: 0},
	} {
		t.Run(fmt.Sprintf("%v/overwrite=%v", tc.retention, tc.overwrite), func(t *testing.T) {
			fs := vfs.NewMem()
			st, err := store.Open("db", store.WithFS(fs), store.WithTombstoneRetention(tc.retention))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			b := st.NewBatch()
			defer b.Close()
			ch := newChain(t, b)
			ch.apply(vchange{"A", "k", "v1", 1})
			ch.apply(vchange{"B", "k", "", 5})
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			if g := st.GuardStats(); g.Tombstones != 1 {
				t.Fatalf("%d tombstones held after a delete", g.Tombstones)
			}
			if tc.overwrite {
				ch.apply(vchange{"A", "k", "v9", 9})
			}
			// Two more commits: the first purges what expired (at the
			// start of its successor's work), the second lands it.
			for range 2 {
				ch.apply(vchange{"B", "other", "x", 0})
				if err := b.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			if g := st.GuardStats(); g.Tombstones != tc.held {
				t.Fatalf("%d tombstones held, want %d", g.Tombstones, tc.held)
			}
			ch.apply(vchange{"A", "k", "late", 2})
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			row, ok, err := st.Get("t", []byte("k"))
			if err != nil || ok != (tc.want != "") || ok && string(row.Value) != tc.want {
				t.Fatalf("row k: %q present %v (%v), want %q", row.Value, ok, err, tc.want)
			}
			// The count of tombstones survives a reopen (it is counted
			// from their index).
			b.Close()
			st.Close()
			st2, err := store.Open("db", store.WithFS(fs))
			if err != nil {
				t.Fatal(err)
			}
			defer st2.Close()
			if g := st2.GuardStats(); g.Tombstones != tc.held {
				t.Fatalf("after reopen: %d tombstones held, want %d", g.Tombstones, tc.held)
			}
		})
	}
}

// TestGuardReadsOnlySharedTables: two sources writing different tables
// without versions keep the blind writes (the guard reads no row); once
// both write one table its changes are checked, and so after a reopen.
func TestGuardReadsOnlySharedTables(t *testing.T) {
	fs := vfs.NewMem()
	st := open(t, fs)
	b := st.NewBatch()
	ch := newChain(t, b)
	put := func(src, table, key string) {
		t.Helper()
		tx := &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{{Table: table, Op: format.OpUpsert, Key: []byte(key), After: []byte(`1`)}}}
		frame, err := format.AppendTx(nil, tx)
		if err != nil {
			t.Fatal(err)
		}
		off := ch.off[src]
		if off == 0 {
			off = 45
		}
		ch.seq++
		if err := b.ApplyTx(src, 1, off, off+int64(len(frame)), ch.seq, tx, frame); err != nil {
			t.Fatal(err)
		}
		ch.off[src] = off + int64(len(frame))
	}
	commit := func() {
		t.Helper()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		put("shop", "orders", fmt.Sprint(i))
		put("stock", "items", fmt.Sprint(i))
	}
	commit()
	if g := st.GuardStats(); g.Reads != 0 {
		t.Fatalf("%d guard reads for sources writing different tables", g.Reads)
	}
	put("stock", "orders", "x")
	put("shop", "orders", "y")
	put("shop", "items-only-stock-wrote", "z") // a new table: one writer
	commit()
	if g := st.GuardStats(); g.Reads != 2 {
		t.Fatalf("%d guard reads, want 2 (the changes of the shared table)", g.Reads)
	}
	b.Close()
	st.Close()
	st = open(t, fs)
	defer st.Close()
	b = st.NewBatch()
	defer b.Close()
	put("shop", "orders", "w")
	put("shop", "items-only-stock-wrote", "v")
	commit()
	if g := st.GuardStats(); g.Reads != 1 {
		t.Fatalf("after reopen: %d guard reads, want 1 (orders is shared)", g.Reads)
	}
}

// TestGuardSkipsReadAboveTableVersions: versions above every version the
// table held (a sequence, rowversion, an SCN) need no read of the row; a
// lower one does, and is judged against the row; an unversioned change in
// the table makes every later one read. Across a reopen too.
func TestGuardSkipsReadAboveTableVersions(t *testing.T) {
	fs := vfs.NewMem()
	st := open(t, fs)
	b := st.NewBatch()
	ch := newChain(t, b)
	reads := func(want uint64) {
		t.Helper()
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if g := st.GuardStats(); g.Reads != want {
			t.Fatalf("%d guard reads, want %d", g.Reads, want)
		}
	}
	for i := range 20 {
		ch.apply(vchange{[]string{"A", "B"}[i%2], fmt.Sprint("k", i%5), fmt.Sprint("v", i), uint64(10 + i)})
	}
	reads(0)
	ch.apply(vchange{"A", "k1", "old", 12}) // below the table's 29: read, stale
	reads(1)
	b.Close()
	st.Close()
	st = open(t, fs)
	defer st.Close()
	b = st.NewBatch()
	defer b.Close()
	ch.b = b
	ch.apply(vchange{"B", "k2", "new", 30})
	reads(0) // a fresh store's counters; 30 is above 29
	ch.apply(vchange{"A", "k3", "unversioned", 0})
	ch.apply(vchange{"B", "k3", "v31", 31})
	reads(2) // two sources on the table: the unversioned one reads, and so does every later one
	if row, ok, _ := st.Get("t", []byte("k1")); !ok || string(row.Value) != "v16" {
		t.Fatalf("k1 = %q, want v16", row.Value)
	}
	if g := st.GuardStats(); g.Stale != 0 {
		t.Fatalf("stale %d after reopen", g.Stale)
	}
}
