package receiver_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

// history is what a database with two app servers (sources a and b)
// committed to a few hot rows: every write of a row gets the row's next
// version, in commit order, and each source's frames are in its own
// commit order. truth is the database's final state.
type history struct {
	txs   map[string][]format.Tx
	truth map[string]string // key -> value; absent: deleted or never written
}

func hotHistory(n int, versions bool, seed uint64) history {
	rng := rand.New(rand.NewPCG(seed, 7))
	h := history{txs: map[string][]format.Tx{}, truth: map[string]string{}}
	ver := map[string]uint64{}
	now := time.Now().UnixNano()
	for i := range n {
		src := []string{"a", "b"}[rng.IntN(2)]
		tx := format.Tx{CommitTime: now + int64(i), ID: fmt.Sprint(i)}
		for range 1 + rng.IntN(3) {
			key := fmt.Sprintf("stock-%02d", rng.IntN(12))
			ver[key]++
			c := format.Change{Table: "stock", Op: format.OpUpsert, Key: []byte(key),
				After: fmt.Appendf(nil, `{"qty":%d,"by":%q,"v":%d}`, rng.IntN(1000), src, ver[key])}
			if rng.IntN(8) == 0 {
				c.Op, c.After = format.OpDelete, nil
			}
			if versions {
				c.Version = ver[key]
			}
			if c.Op == format.OpDelete {
				delete(h.truth, key)
			} else {
				h.truth[key] = string(c.After)
			}
			tx.Changes = append(tx.Changes, c)
		}
		h.txs[src] = append(h.txs[src], tx)
	}
	return h
}

// interleave orders two sources' messages for publishing.
func interleave(order string, a, b []wiretest.Msg, seed uint64) []wiretest.Msg {
	var out []wiretest.Msg
	switch order {
	case "a first":
		return append(append(out, a...), b...)
	case "b first":
		return append(append(out, b...), a...)
	case "alternate":
		for i := 0; i < max(len(a), len(b)); i++ {
			if i < len(a) {
				out = append(out, a[i])
			}
			if i < len(b) {
				out = append(out, b[i])
			}
		}
		return out
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || len(a) > 0 && rng.IntN(2) == 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// rowsOf returns the receiver's rows of table as key -> value.
func rowsOf(t *testing.T, st *store.Store, table string) map[string]string {
	t.Helper()
	rows, more, err := st.Scan(table, nil, nil, 100000)
	if err != nil || more {
		t.Fatalf("scan %s: more=%v %v", table, more, err)
	}
	out := map[string]string{}
	for _, r := range rows {
		out[string(r.Key)] = string(r.Value)
	}
	return out
}

// syncBuffer is a log sink safe for the receiver's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMultiSourceMergesToTruth: two sources writing the same hot rows with
// row versions end equal to the database, whatever order their messages
// arrive in; without versions the receiver says the result is undefined
// (status, metric, warning).
func TestMultiSourceMergesToTruth(t *testing.T) {
	for _, versions := range []bool{true, false} {
		h := hotHistory(400, versions, 42)
		msgs := map[string][]wiretest.Msg{}
		for _, src := range []string{"a", "b"} {
			msgs[src] = writeMsgs(t, src, h.txs[src], 50, 600)
		}
		for _, order := range []string{"a first", "b first", "alternate", "random"} {
			t.Run(fmt.Sprintf("versions=%v/%s", versions, order), func(t *testing.T) {
				e := newEnv(t)
				var logs syncBuffer
				e.publish(interleave(order, msgs["a"], msgs["b"], 5)...)
				run := e.start(t.TempDir(), receiver.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
				run.waitApplied(t, "a", msgs["a"][len(msgs["a"])-1])
				run.waitApplied(t, "b", msgs["b"][len(msgs["b"])-1])
				got := rowsOf(t, run.r.Store(), "stock")
				st := run.r.Status()
				if !versions {
					if st.UnversionedCrossSourceWrites == 0 {
						t.Fatal("two sources wrote the same rows without versions: status shows no cross-source write")
					}
					if !strings.Contains(logs.String(), "two sources wrote the same row without row versions") {
						t.Fatalf("no warning logged; log:\n%s", logs.String())
					}
					res, err := http.Get(run.http.URL + "/metrics")
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if !strings.Contains(string(body), "ferry_receiver_unversioned_cross_source_writes_total ") ||
						strings.Contains(string(body), "ferry_receiver_unversioned_cross_source_writes_total 0\n") {
						t.Fatal("metric ferry_receiver_unversioned_cross_source_writes_total missing or zero")
					}
					return
				}
				if !reflect.DeepEqual(got, h.truth) {
					differ := 0
					for k, v := range h.truth {
						if got[k] != v {
							differ++
						}
					}
					t.Fatalf("receiver differs from the database: %d of %d rows (%d rows held)", differ, len(h.truth), len(got))
				}
				if st.UnversionedCrossSourceWrites != 0 {
					t.Fatalf("%d cross-source writes without versions counted, with versions", st.UnversionedCrossSourceWrites)
				}
				// The change log holds what was applied: replaying it
				// gives the rows.
				cs, err := run.r.Store().Changes(0, 100000)
				if err != nil {
					t.Fatal(err)
				}
				replay := map[string]string{}
				for _, c := range cs {
					if c.Op == format.OpDelete {
						delete(replay, string(c.Key))
					} else {
						replay[string(c.Key)] = string(c.After)
					}
				}
				if !reflect.DeepEqual(replay, h.truth) {
					t.Fatal("the change log replayed does not give the rows")
				}
				// One source entirely before the other: the second's older
				// writes of rows the first wrote later must be skipped.
				if (order == "a first" || order == "b first") && st.StaleChangesSkipped == 0 {
					t.Fatal("no stale change skipped, with one source entirely first")
				}
			})
		}
	}
}

// preparedSource writes source a's segment with the order protocol:
//
//	P1 prepared {x=1}                  committed
//	P2 prepared {y=1}                  aborted
//	P3 prepared {r="old"}, P4 prepared {r="new"}: P4's outcome first, then P3's
//	P5 prepared {z=1}                  outcome last (after the cut)
//
// and returns its frames and the index of the first frame after the cut
// (P5's outcome and what follows).
func preparedSource(t *testing.T, dir string) ([]wiretest.Frame, int) {
	t.Helper()
	w, err := format.OpenWriter(dir, "a", format.WithSync(format.SyncNone, 0), format.WithHeartbeat(0), format.WithMaxSegmentAge(0))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	mk := func(key, val string) *format.Tx {
		return &format.Tx{CommitTime: now, Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte(key), After: []byte(val)}}}
	}
	prep := func(key, val string) *format.Prepared {
		p, err := w.Prepare(mk(key, val))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	sync := func() {
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	p1 := prep("x", `1`)
	must(p1.Commit())
	p2 := prep("y", `1`)
	must(p2.Abort())
	sync()
	p3 := prep("r", `"old"`)
	p4 := prep("r", `"new"`)
	must(p4.Commit())
	sync()
	if _, err := w.Commit(mk("w", `1`)); err != nil { // a committed frame between
		t.Fatal(err)
	}
	must(p3.Commit())
	p5 := prep("z", `1`)
	sync()
	frames, err := wiretest.Frames(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	cut := len(frames)
	must(p5.Commit())
	must(w.Close())
	frames, err = wiretest.Frames(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	return frames, cut
}

// TestPreparedTransactions: prepared frames are applied only once their
// outcome says committed, with the prepared frame's identity; an aborted
// one is never visible; an outcome arriving after a later transaction of
// the same row loses to it; a restart between a prepared frame and its
// outcome keeps it parked and applies it once after; a rebuild from the
// stream gives the same rows and change log.
func TestPreparedTransactions(t *testing.T) {
	frames, cut := preparedSource(t, t.TempDir())
	var types []string
	for _, f := range frames {
		types = append(types, f.Type.String())
	}
	t.Logf("frames: %v (cut before %d)", types, cut)
	before := wiretest.Cut("a", frames[:cut], 1<<20)
	after := wiretest.Cut("a", frames[cut:], 1<<20)

	e := newEnv(t)
	data := t.TempDir()
	e.publish(before...)
	run := e.start(data)
	run.waitApplied(t, "a", before[len(before)-1])
	want := map[string]string{"x": `1`, "r": `"new"`, "w": `1`}
	if got := rowsOf(t, run.r.Store(), "t"); !reflect.DeepEqual(got, want) {
		t.Fatalf("rows before z's outcome: %v, want %v", got, want)
	}
	st := run.r.Status()
	if st.ParkedTransactions != 1 || len(st.Sources) != 1 || st.Sources[0].Parked != 1 {
		t.Fatalf("parked: %d (source: %+v), want 1 (z)", st.ParkedTransactions, st.Sources)
	}
	if st.ParkedOldestAgeSeconds <= 0 {
		t.Fatalf("oldest parked age %v", st.ParkedOldestAgeSeconds)
	}
	if st.StaleChangesSkipped != 1 {
		t.Fatalf("%d stale changes skipped, want 1 (P3's r, older than P4's)", st.StaleChangesSkipped)
	}
	run.stop()

	// z is parked in the store across the restart; its outcome arrives
	// afterwards.
	e.publish(after...)
	run = e.start(data)
	run.waitApplied(t, "a", after[len(after)-1])
	want["z"] = `1`
	if got := rowsOf(t, run.r.Store(), "t"); !reflect.DeepEqual(got, want) {
		t.Fatalf("rows after z's outcome: %v, want %v", got, want)
	}
	if st := run.r.Status(); st.ParkedTransactions != 0 || st.UnmatchedOutcomes != 0 {
		t.Fatalf("parked %d, unmatched outcomes %d after every outcome", st.ParkedTransactions, st.UnmatchedOutcomes)
	}
	live := dumpStore(t, run.r.Store(), "t")
	// The change log: each applied once, with its prepared frame's
	// identity; y and P3's r never in it.
	var logged []string
	for _, c := range live.Changes {
		logged = append(logged, c.Key+"="+string(c.After))
	}
	if w := []string{`x=1`, `r="new"`, `w=1`, `z=1`}; !reflect.DeepEqual(logged, w) {
		t.Fatalf("change log %v, want %v", logged, w)
	}
	var zPos format.Position
	for _, f := range frames {
		if f.Type == format.FrameTx && f.Changes == 1 && bytes.Contains(f.Raw, []byte("z")) {
			zPos = format.Position{Segment: f.Segment, Offset: f.Off}
		}
	}
	if zc := live.Changes[3]; zc.Version.Segment != zPos.Segment || zc.Version.Offset != zPos.Offset {
		t.Fatalf("z logged at %d:%d, its prepared frame is at %v", zc.Version.Segment, zc.Version.Offset, zPos)
	}
	run.stop()

	// Replay of the whole stream into a fresh store gives the same.
	run = e.start(data, receiver.WithRebuild(true))
	run.waitApplied(t, "a", after[len(after)-1])
	if rebuilt := dumpStore(t, run.r.Store(), "t"); !reflect.DeepEqual(live, rebuilt) {
		t.Fatalf("rebuilt store differs: %+v vs %+v", rebuilt, live)
	}
}
