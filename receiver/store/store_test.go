package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

func tx(keys ...string) *format.Tx {
	t := &format.Tx{CommitTime: time.Now().UnixNano()}
	for _, k := range keys {
		op := format.OpUpsert
		if k[0] == '-' {
			op, k = format.OpDelete, k[1:]
		}
		t.Changes = append(t.Changes, format.Change{Table: "t", Op: op, Key: []byte(k), After: []byte(`{"k":"` + k + `"}`)})
	}
	return t
}

func open(t *testing.T, fs vfs.FS) *store.Store {
	t.Helper()
	st, err := store.Open("db", store.WithFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestApplyReopenAndRead(t *testing.T) {
	fs := vfs.NewMem()
	st := open(t, fs)
	b := st.NewBatch()
	off := int64(45)
	for i, keys := range [][]string{{"a", "b"}, {"c"}, {"-a", "d", "b"}} {
		end := off + 100
		if err := b.ApplyTx("s", 1, off, end, uint64(i+1), tx(keys...)); err != nil {
			t.Fatal(err)
		}
		off = end
	}
	// The same frame again is refused: it would apply twice.
	if err := b.ApplyTx("s", 1, 145, 245, 9, tx("x")); !errors.Is(err, store.ErrNotNext) {
		t.Fatalf("re-applying a frame: %v, want ErrNotNext", err)
	}
	hb := time.Now().Add(time.Hour).UnixNano()
	if err := b.Advance("s", 2, 45, 62, 4, hb); err != nil { // next segment, heartbeat
		t.Fatal(err)
	}
	b.SetCursor(store.StreamCursor{Seq: 4, Created: 77})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	check := func(st *store.Store) {
		t.Helper()
		if _, ok, _ := st.Get("t", []byte("a")); ok {
			t.Fatal("deleted row a still there")
		}
		row, ok, err := st.Get("t", []byte("b"))
		if err != nil || !ok || row.Version.Offset != 245 || row.Version.Index != 2 || row.ChangeID != 6 {
			t.Fatalf("row b: %+v %v %v", row, ok, err)
		}
		p := st.Position("s")
		if p.Segment != 2 || p.Offset != 62 || p.Changes != 6 || p.Transactions != 3 || p.AliveAt != hb || p.StreamSeq != 4 {
			t.Fatalf("position %+v", p)
		}
		if c := st.Cursor(); c.Seq != 4 || c.Created != 77 {
			t.Fatalf("cursor %+v", c)
		}
		if first, last := st.ChangeRange(); first != 1 || last != 6 {
			t.Fatalf("change range %d..%d", first, last)
		}
		rows, more, err := st.Scan("t", nil, nil, 10)
		if err != nil || more || len(rows) != 3 || string(rows[0].Key) != "b" || string(rows[2].Key) != "d" {
			t.Fatalf("scan: %d rows, more=%v, err=%v", len(rows), more, err)
		}
		rows, more, _ = st.Scan("t", nil, []byte("b"), 1)
		if len(rows) != 1 || string(rows[0].Key) != "c" || !more {
			t.Fatalf("scan after b: %+v more=%v", rows, more)
		}
		cs, err := st.Changes(3, 10)
		if err != nil || len(cs) != 3 || cs[0].ID != 4 || cs[0].Op != format.OpDelete || string(cs[0].Key) != "a" {
			t.Fatalf("changes after 3: %+v %v", cs, err)
		}
	}
	check(st)
	st.Close()
	st = open(t, fs)
	defer st.Close()
	check(st)
}

func TestTrim(t *testing.T) {
	st := open(t, vfs.NewMem())
	defer st.Close()
	b := st.NewBatch()
	defer b.Close()
	off := int64(45)
	for i := 0; i < 100; i++ {
		if err := b.ApplyTx("s", 1, off, off+10, 1, tx(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		off += 10
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	// The floor (a webhook at 30) wins over the count.
	if n, err := st.Trim(10, 0, 30); err != nil || n != 30 {
		t.Fatalf("Trim: %d, %v; want 30", n, err)
	}
	if _, err := st.Changes(10, 5); !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("reading trimmed changes: %v, want ErrTrimmed", err)
	}
	if cs, err := st.Changes(30, 5); err != nil || cs[0].ID != 31 {
		t.Fatalf("changes after 30: %v", err)
	}
	if n, _ := st.Trim(10, 0, ^uint64(0)); n != 60 {
		t.Fatalf("Trim by count removed %d, want 60", n)
	}
	if first, last := st.ChangeRange(); first != 91 || last != 100 {
		t.Fatalf("range %d..%d, want 91..100", first, last)
	}
	time.Sleep(20 * time.Millisecond)
	if n, _ := st.Trim(0, 10*time.Millisecond, ^uint64(0)); n != 10 {
		t.Fatalf("Trim by age removed %d, want 10", n)
	}
	// Rows survive the trimming of their changes.
	if _, ok, _ := st.Get("t", []byte("5")); !ok {
		t.Fatal("row lost with its change")
	}
}

func TestSortedRowsKeepLastWrite(t *testing.T) {
	st := open(t, vfs.NewMem())
	defer st.Close()
	b := st.NewBatch()
	defer b.Close()
	// Within one batch: z, a, z deleted, a again, z again.
	steps := [][]string{{"z", "a"}, {"-z"}, {"a"}, {"z"}, {"-a"}}
	off := int64(45)
	for _, s := range steps {
		if err := b.ApplyTx("s", 1, off, off+10, 1, tx(s...)); err != nil {
			t.Fatal(err)
		}
		off += 10
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.Get("t", []byte("a")); ok {
		t.Fatal("a: deleted last, but present")
	}
	row, ok, _ := st.Get("t", []byte("z"))
	if !ok || row.ChangeID != 5 {
		t.Fatalf("z: %+v ok=%v, want the write of change 5", row, ok)
	}
}
