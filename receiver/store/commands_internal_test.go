package store

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ferrysync/ferry/format"
)

// commandByGets is what the store held of id read with a Get per record,
// as it was read before readCommands: the reference.
func commandByGets(t *testing.T, s *Store, id string) (CommandStatus, bool) {
	t.Helper()
	var st CommandStatus
	if v, ok, err := s.getMeta(commandKey(cmdSubmitted, id)); err != nil {
		t.Fatal(err)
	} else if ok {
		st.Submitted = new(Submitted)
		if err := decodeRecord(v, st.Submitted); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := s.getMeta(commandKey(cmdOutcome, id)); err != nil {
		t.Fatal(err)
	} else if ok {
		st.Outcome = new(Outcome)
		if err := decodeRecord(v, st.Outcome); err != nil {
			t.Fatal(err)
		}
	}
	return st, st.Submitted != nil || st.Outcome != nil
}

// Submissions and reads of command records see what a Get per record sees,
// with the records in the memtable, in tables, and after a reopen: new ids
// are recorded, repeats answered with the first record and any outcome, a
// conflict records nothing of the batch.
func TestCommandRecordsRead(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", WithFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	sub := func(i int, digest string) Submitted {
		return Submitted{Source: "s", Table: "t", Key: fmt.Sprint("k", i), Op: "insert", Digest: digest, Time: time.Unix(int64(i), 0).UTC()}
	}
	var ids []string
	var subs []Submitted
	for i := range 300 {
		ids, subs = append(ids, fmt.Sprintf("c-%03d", 299-i)), append(subs, sub(i, fmt.Sprint("d", i)))
	}
	res, err := s.SubmitBatch(ids, subs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range res {
		if !res[i].New || res[i].Outcome != nil || res[i].Held != subs[i] {
			t.Fatalf("first submission %d: %+v", i, res[i])
		}
	}
	// Outcomes for every third command, and one for a command submitted
	// elsewhere.
	b := s.NewBatch()
	off, seq := int64(45), uint64(1)
	for _, id := range append([]string{"elsewhere"}, ids...) {
		if seq%3 != 1 {
			seq++
			continue
		}
		r := format.Rejection{Time: int64(seq), Command: id, Origin: "svc", Reason: "no"}
		frame, err := format.AppendRejection(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Reject("s", 1, off, off+int64(len(frame)), seq, &r); err != nil {
			t.Fatal(err)
		}
		off, seq = off+int64(len(frame)), seq+1
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	asked := append(append([]string{"elsewhere", "unknown", ids[5]}, ids...), ids[5])
	check := func(when string) {
		t.Helper()
		sts, oks, err := s.Commands(asked)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range asked {
			want, wok := commandByGets(t, s, id)
			if oks[i] != wok || !reflect.DeepEqual(sts[i], want) {
				t.Fatalf("%s: Commands %s = %+v %v, a Get per record %+v %v", when, id, sts[i], oks[i], want, wok)
			}
		}
		if oks[1] || !oks[0] || (sts[0].Submitted != nil) != (when != "memtable") || sts[0].Outcome == nil { // submitted below
			t.Fatalf("%s: unknown %v, elsewhere %+v", when, oks[1], sts[0])
		}
		// Submitted again: the first records and the outcomes; another
		// command under one of the ids refuses the whole batch.
		again := append([]string{"elsewhere"}, ids[:50]...)
		agsubs := append([]Submitted{sub(-1, "x")}, subs[:50]...)
		before := make([]CommandStatus, len(again))
		for i, id := range again {
			before[i], _ = commandByGets(t, s, id)
		}
		res, err := s.SubmitBatch(again, agsubs)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range again {
			want := before[i]
			if res[i].Err != nil || !reflect.DeepEqual(res[i].Outcome, want.Outcome) || (want.Submitted != nil) == res[i].New {
				t.Fatalf("%s: again %s: %+v, records %+v", when, id, res[i], want)
			}
		}
		conflict := []string{"fresh-1", ids[7], "fresh-2"}
		res, err = s.SubmitBatch(conflict, []Submitted{sub(1, "a"), sub(7, "other"), sub(2, "b")})
		if !errors.Is(err, ErrCommandConflict) || !errors.Is(res[1].Err, ErrCommandConflict) || res[0].Err != nil || res[1].Held != subs[7] {
			t.Fatalf("%s: conflict: %+v, %v", when, res, err)
		}
		for _, id := range []string{"fresh-1", "fresh-2"} {
			if _, ok := commandByGets(t, s, id); ok {
				t.Fatalf("%s: %s recorded by a refused batch", when, id)
			}
		}
	}
	check("memtable")
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	check("tables")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open("db", WithFS(fs)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("reopened")
}

// The first outcome of a command stands, whether the later ones come in the
// same work, while the first is in flight, or once it is in the store; each
// later one is counted.
func TestDuplicateOutcomes(t *testing.T) {
	s, err := Open("db", WithFS(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := s.NewBatch()
	off, seq := int64(45), uint64(1)
	reject := func(id, reason string) {
		t.Helper()
		r := format.Rejection{Time: int64(seq), Command: id, Origin: "svc", Reason: reason}
		frame, err := format.AppendRejection(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Reject("s", 1, off, off+int64(len(frame)), seq, &r); err != nil {
			t.Fatal(err)
		}
		off, seq = off+int64(len(frame)), seq+1
	}
	want := map[string]string{}
	check := func(when string, dups uint64) {
		t.Helper()
		for id, reason := range want {
			st, ok, err := s.Command(id)
			if err != nil || !ok || st.Outcome == nil || st.Outcome.Reason != reason {
				t.Fatalf("%s: %s = %+v %v %v, want the outcome %q", when, id, st.Outcome, ok, err, reason)
			}
		}
		if got := s.DuplicateOutcomes(); got != dups {
			t.Fatalf("%s: %d duplicate outcomes, want %d", when, got, dups)
		}
	}
	reject("a", "first")
	reject("b", "first")
	reject("b", "second") // the same work
	want["a"], want["b"] = "first", "first"
	if err := b.CommitAsync(); err != nil {
		t.Fatal(err)
	}
	reject("a", "in flight") // the first one is in flight (or just landed)
	reject("c", "first")
	want["c"] = "first"
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	check("in flight", 2)
	reject("a", "stored")
	reject("a", "stored again")
	reject("c", "stored")
	reject("d", "first")
	want["d"] = "first"
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	check("stored", 5)
	reject("d", "next work")
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	check("next work", 6)
}

// A watch ends when the last of its commands has an outcome (at once if
// they all had one), whoever else waits for the same commands; a watch
// stopped early leaves nothing behind.
func TestWatchCommands(t *testing.T) {
	s, err := Open("db", WithFS(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := s.NewBatch()
	off, seq := int64(45), uint64(1)
	outcomes := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			r := format.Rejection{Time: int64(seq), Command: id, Origin: "svc", Reason: "no"}
			frame, err := format.AppendRejection(nil, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Reject("s", 1, off, off+int64(len(frame)), seq, &r); err != nil {
				t.Fatal(err)
			}
			off, seq = off+int64(len(frame)), seq+1
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	done := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	watch := func(ids ...string) (<-chan struct{}, func()) {
		t.Helper()
		ch, stop, err := s.WatchCommands(ids)
		if err != nil {
			t.Fatal(err)
		}
		return ch, stop
	}
	outcomes("old")
	a, stopA := watch("a", "b", "old", "a")
	b2, stopB := watch("b", "c")
	c, stopC := watch("b")
	if old, stopOld := watch("old"); !done(old) {
		t.Fatal("a watch of a command with an outcome did not end at once")
	} else {
		stopOld()
	}
	stopC()
	outcomes("b")
	if done(a) || done(b2) || done(c) {
		t.Fatal("a watch ended before the last of its commands")
	}
	outcomes("a", "x")
	if !done(a) || done(b2) {
		t.Fatalf("after a: watch a ended %v (want true), watch b %v (want false)", done(a), done(b2))
	}
	stopA()
	stopB()
	s.cmds.mu.Lock()
	left := len(s.cmds.waiters)
	s.cmds.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d commands still watched after every watch stopped", left)
	}
}
