package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

// TestCommandRetention: the records of commands whose outcome is older
// than the retention go, at most 4,096 per commit (a backlog takes several
// commits, none stalls); a pending command's stay whatever its age; an id
// whose records went is a new command when submitted again.
func TestCommandRetention(t *testing.T) {
	const retention = 300 * time.Millisecond
	fs := vfs.NewMem()
	st, err := store.Open("db", store.WithFS(fs), store.WithCommandRetention(retention))
	if err != nil {
		t.Fatal(err)
	}
	const done = 4096 + 50 // over one commit's purge
	ids := []string{"pending-1"}
	subs := []store.Submitted{{Source: "s", Table: "t", Key: "p", Op: "insert", Digest: "d-p", Time: time.Now()}}
	for i := range done {
		ids = append(ids, fmt.Sprintf("done-%d", i))
		subs = append(subs, store.Submitted{Source: "s", Table: "t", Key: fmt.Sprint(i), Op: "insert", Digest: fmt.Sprint("d-", i), Time: time.Now()})
	}
	if _, err := st.SubmitBatch(ids, subs); err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	off := int64(45)
	seq := uint64(1)
	reject := func(id string) {
		t.Helper()
		r := format.Rejection{Time: time.Now().UnixNano(), Command: id, Origin: "svc", Reason: "no"}
		frame, err := format.AppendRejection(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		end := off + int64(len(frame))
		if err := b.Reject("s", 1, off, end, seq, &r); err != nil {
			t.Fatal(err)
		}
		off, seq = end, seq+1
	}
	for _, id := range ids[1:] {
		reject(id)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := st.Command("done-7"); err != nil || !ok || c.Outcome == nil || c.Submitted == nil {
		t.Fatalf("done-7 before the retention: %+v %v %v, want its records", c, ok, err)
	}
	// A heartbeat commits, and the purge rides along with the next work.
	heartbeat := func() {
		t.Helper()
		if err := b.Advance("s", 1, off, off+17, seq, time.Now().UnixNano(), false); err != nil {
			t.Fatal(err)
		}
		off, seq = off+17, seq+1
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(retention + time.Second) // past the retention and the purge interval
	heartbeat()                         // looks for expired records: the next work purges them
	heartbeat()
	if got := st.CommandsPurged(); got != 4096 {
		t.Fatalf("%d commands purged by one commit, want 4096 (the bound)", got)
	}
	time.Sleep(time.Second) // the purge interval
	heartbeat()
	heartbeat()
	if got := st.CommandsPurged(); got != done {
		t.Fatalf("%d commands purged after two purging commits, want all %d", got, done)
	}
	check := func(st *store.Store) {
		t.Helper()
		for _, id := range []string{"done-0", "done-4095", fmt.Sprint("done-", done-1)} {
			if c, ok, err := st.Command(id); err != nil || ok {
				t.Errorf("%s after the retention: %+v %v %v, want nothing", id, c, ok, err)
			}
		}
		if c, ok, err := st.Command("pending-1"); err != nil || !ok || c.Submitted == nil || c.Outcome != nil {
			t.Errorf("pending-1: %+v %v %v, want kept, pending", c, ok, err)
		}
		if p := st.CommandStats().Pending; p != 1 {
			t.Errorf("%d commands pending, want 1", p)
		}
	}
	check(st)
	b.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = store.Open("db", store.WithFS(fs), store.WithCommandRetention(retention))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	check(st)
	// The same id again, even with other content, is a new command now.
	res, err := st.SubmitBatch([]string{"done-3"}, []store.Submitted{{Source: "s", Table: "t", Key: "other", Op: "insert", Digest: "new", Time: time.Now()}})
	if err != nil || !res[0].New || res[0].Outcome != nil {
		t.Fatalf("done-3 submitted after its records went: %+v %v, want a new command", res, err)
	}
}
