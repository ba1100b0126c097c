package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestOutcomesOfAnOlderStoreIndexed: a store written before outcome
// records were indexed (outcomes, no index entries, no marker) gets them
// indexed at its next open, once: they are then purged one retention
// later, like any other, and an open after that does not index again.
func TestOutcomesOfAnOlderStoreIndexed(t *testing.T) {
	const retention = 200 * time.Millisecond
	fs := vfs.NewMem()
	st, err := Open("db", WithFS(fs), WithCommandRetention(retention))
	if err != nil {
		t.Fatal(err)
	}
	// What an older release left: outcome and submitted records only.
	const n = 10
	wb := st.db.NewBatch()
	for i := range n {
		id := fmt.Sprintf("old-%d", i)
		sub, _ := encodeRecord(&Submitted{Source: "s", Table: "t", Key: fmt.Sprint(i), Op: "insert", Digest: "d", Time: time.Now()})
		out, _ := encodeRecord(&Outcome{State: CommandRejected, Source: "s", Reason: "no"})
		wb.Set(commandKey(cmdSubmitted, id), sub, nil)
		wb.Set(commandKey(cmdOutcome, id), out, nil)
	}
	lo, hi := []byte{prefixCommand, cmdIndex}, []byte{prefixCommand, cmdIndex + 1}
	wb.DeleteRange(lo, hi, nil)
	wb.Delete([]byte{prefixCommand, cmdIndexed}, nil)
	if err := wb.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	wb.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	indexed := func(st *Store) int {
		t.Helper()
		it, err := st.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		k := 0
		for it.First(); it.Valid(); it.Next() {
			k++
		}
		return k
	}
	st, err = Open("db", WithFS(fs), WithCommandRetention(retention))
	if err != nil {
		t.Fatal(err)
	}
	if got := indexed(st); got != n {
		t.Fatalf("%d outcomes indexed at open, want %d", got, n)
	}
	time.Sleep(retention + purgeEvery)
	b := st.NewBatch()
	for i := range int64(2) { // one commit finds them expired, the next work purges them
		if err := b.Advance("s", 1, 45+17*i, 62+17*i, uint64(i+1), time.Now().UnixNano(), false); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	for i := range n {
		if c, ok, err := st.Command(fmt.Sprintf("old-%d", i)); err != nil || ok {
			t.Fatalf("old-%d after the retention: %+v %v %v, want purged", i, c, ok, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// Indexed once: a later open finds the marker and adds nothing.
	st, err = Open("db", WithFS(fs), WithCommandRetention(retention))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := indexed(st); got != 0 {
		t.Fatalf("%d index entries after the purge and a reopen, want 0", got)
	}
}
