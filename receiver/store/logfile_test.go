package store

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
)

// TestInlineEntriesStillRead: stores written before the change log moved to
// its own files keep their entries inline in Pebble (index version 1); they
// open, read, append and trim across both kinds.
func TestInlineEntriesStillRead(t *testing.T) {
	fs := vfs.NewMem()
	st, err := Open("db", WithFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	off := int64(45)
	commit := func(st *Store, from int) {
		t.Helper()
		b := st.NewBatch()
		defer b.Close()
		for i := from; i < from+10; i++ {
			tx := format.Tx{CommitTime: int64(i), Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: fmt.Appendf(nil, "k%d", i), After: []byte(`{}`)}}}
			frame, err := format.AppendTx(nil, &tx)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.ApplyTx("s", 1, off, off+int64(len(frame)), 1, &tx, frame); err != nil {
				t.Fatal(err)
			}
			off += int64(len(frame))
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	commit(st, 0)
	// Rewrite entry 1 the way an older store held it: inline.
	key := appendChangeKey(nil, 1)
	v, closer, err := st.db.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	x, err := decodeIndex(1, v)
	closer.Close()
	if err != nil {
		t.Fatal(err)
	}
	lr := logReader{l: st.logs}
	entry, err := lr.entry(1, &x)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.db.Set(key, append([]byte(nil), entry...), st.wo); err != nil {
		t.Fatal(err)
	}
	lr.close()
	st.Close()

	st, err = Open("db", WithFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	commit(st, 10)
	cs, err := st.Changes(0, 100)
	if err != nil || len(cs) != 20 {
		t.Fatalf("reading inline and file entries: %d changes, %v", len(cs), err)
	}
	for i, c := range cs {
		if string(c.Key) != fmt.Sprintf("k%d", i) || c.ID != uint64(i+1) {
			t.Fatalf("change %d: %q id %d", i, c.Key, c.ID)
		}
	}
	if n, err := st.Trim(10, 0, ^uint64(0)); err != nil || n != 10 {
		t.Fatalf("trimming the inline entry: %d, %v", n, err)
	}
	if cs, err := st.Changes(10, 100); err != nil || len(cs) != 10 {
		t.Fatalf("after the trim: %d changes, %v", len(cs), err)
	}
}
