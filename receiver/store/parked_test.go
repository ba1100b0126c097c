package store_test

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

// TestParkAndResolve: a parked transaction is invisible until resolved,
// whether its resolution comes in the same batch, while the park's commit
// is in flight, or after a reopen; committed applies it with the prepared
// frame's identity, aborted drops it, a second resolution finds nothing.
func TestParkAndResolve(t *testing.T) {
	for _, mode := range []string{"same batch", "in flight", "committed", "reopened"} {
		for _, d := range []format.Decision{format.DecisionCommitted, format.DecisionAborted} {
			t.Run(mode+"/"+d.String(), func(t *testing.T) {
				fs := vfs.NewMem()
				st := open(t, fs)
				defer func() { st.Close() }()
				b := st.NewBatch()
				defer func() { b.Close() }()
				tx := &format.Tx{CommitTime: time.Now().UnixNano(), Prepared: true,
					Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("k"), After: []byte(`1`)}}}
				frame, err := format.AppendTx(nil, tx)
				if err != nil {
					t.Fatal(err)
				}
				const off = 45
				end := off + int64(len(frame))
				if err := b.ParkTx("s", 1, off, end, 1, tx, frame); err != nil {
					t.Fatal(err)
				}
				switch mode {
				case "in flight":
					err = b.CommitAsync()
				case "committed", "reopened":
					err = b.Commit()
				}
				if err != nil {
					t.Fatal(err)
				}
				if mode == "reopened" {
					b.Close()
					st.Close()
					st = open(t, fs)
					b = st.NewBatch()
				}
				if mode != "same batch" && mode != "in flight" {
					if ps, err := st.ParkedStats(); err != nil || ps.Count != 1 || ps.BySource["s"] != 1 || ps.Oldest.IsZero() {
						t.Fatalf("parked stats %+v (%v), want one of s", ps, err)
					}
					if _, ok, _ := st.Get("t", []byte("k")); ok {
						t.Fatal("a parked transaction is visible")
					}
				}
				r := format.Resolution{Prepared: format.Position{Segment: 1, Offset: off}, Decision: d}
				n, found, err := b.Resolve("s", r)
				if err != nil || !found {
					t.Fatalf("resolve: found %v, %v", found, err)
				}
				if _, found, _ := b.Resolve("s", r); found {
					t.Fatal("a second resolution found the transaction parked again")
				}
				if err := b.Advance("s", 1, end, end+20, 2, 0, false); err != nil { // the outcome frame
					t.Fatal(err)
				}
				if err := b.Commit(); err != nil {
					t.Fatal(err)
				}
				row, ok, err := st.Get("t", []byte("k"))
				if err != nil {
					t.Fatal(err)
				}
				if d == format.DecisionCommitted {
					if !ok || n != 1 || string(row.Value) != `1` || row.Version != (store.Version{Source: "s", Segment: 1, Offset: off}) {
						t.Fatalf("committed: row %+v present %v, %d applied", row, ok, n)
					}
					if cs, err := st.Changes(0, 10); err != nil || len(cs) != 1 || cs[0].Version.Offset != off {
						t.Fatalf("change log %+v (%v)", cs, err)
					}
				} else if ok || n != 0 {
					t.Fatalf("aborted: row %+v present %v", row, ok)
				}
				if ps, _ := st.ParkedStats(); ps.Count != 0 {
					t.Fatalf("%d still parked", ps.Count)
				}
				if o := st.OutcomeStats(); o.Unmatched != 1 {
					t.Fatalf("outcome stats %+v, want 1 unmatched", o)
				}
				if p := st.Position("s"); p.Offset != end+20 {
					t.Fatalf("position %+v", p)
				}
			})
		}
	}
}
