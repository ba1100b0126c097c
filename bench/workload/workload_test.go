package workload_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
)

func txString(tx *workload.Tx) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d:", tx.Version)
	for _, st := range tx.Statements(nil) {
		fmt.Fprintf(&b, "%s%v;", st.SQL, st.Args)
	}
	return b.String()
}

func TestDeterministic(t *testing.T) {
	cfg := workload.Config{Seed: 7, Streams: 3, Customers: 30, Products: 30, Orders: 30}
	run := func(seed uint64, stream int) []string {
		c := cfg
		c.Seed = seed
		s, err := workload.NewStream(c, stream)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i := 0; i < 200; i++ {
			out = append(out, txString(s.Next()))
		}
		return out
	}
	a, b := run(7, 1), run(7, 1)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("tx %d differs between two runs with the same seed:\n%s\n%s", i, a[i], b[i])
		}
	}
	if c := run(8, 1); strings.Join(c, "") == strings.Join(a, "") {
		t.Fatal("seeds 7 and 8 generated the same transactions")
	}
	if c := run(7, 2); strings.Join(c, "") == strings.Join(a, "") {
		t.Fatal("streams 1 and 2 generated the same transactions")
	}
}

// TestConsistent applies every stream to an in-memory model of the tables
// and checks that inserts are new, updates and deletes hit live rows with
// the right before image, streams never share a key, the mix is respected
// and versions are unique.
func TestConsistent(t *testing.T) {
	for _, tc := range []struct {
		name string
		mix  workload.Mix
		// sustained: the mix deletes no faster than it inserts, so the
		// deletes never run out of rows and the mix shows in the output.
		sustained bool
		hotRows   int
	}{
		{"Default", workload.Mix{}, true, 0},
		{"DeleteHeavy", workload.Mix{Insert: 10, Update: 10, Delete: 80}, false, 0},
		{"InsertOnly", workload.Mix{Insert: 1}, true, 0},
		// Hot updates take a change's place: the stream's model must
		// not count on the change it replaced.
		{"HotRows", workload.Mix{}, true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := workload.Config{Seed: 1, Streams: 4, TxSize: 5, Mix: tc.mix, Customers: 40, Products: 40, Orders: 40, HotRows: tc.hotRows}
			model := map[string]string{} // table/key -> row JSON
			owner := map[string]int{}
			versions := map[int64]bool{}
			ops := map[format.Op]int{}
			for stream := 0; stream < cfg.Streams; stream++ {
				s, err := workload.NewStream(cfg, stream)
				if err != nil {
					t.Fatal(err)
				}
				for _, tr := range s.Initial() {
					for _, r := range tr.Rows {
						k := tr.Table.Name + "/" + string(r.AppendKey(nil, tr.Table))
						if _, dup := model[k]; dup {
							t.Fatalf("initial row %s loaded twice (stream %d, owner %d)", k, stream, owner[k])
						}
						model[k], owner[k] = string(r.AppendJSON(nil, tr.Table)), stream
					}
				}
				for i := 0; i < 2000; i++ {
					tx := s.Next()
					if versions[tx.Version] {
						t.Fatalf("version %d repeated", tx.Version)
					}
					versions[tx.Version] = true
					if len(tx.Changes) != cfg.TxSize {
						t.Fatalf("tx of %d changes, want %d", len(tx.Changes), cfg.TxSize)
					}
					for _, c := range tx.Changes {
						if c.Returning() {
							continue // a hot row: the database's (TestHotRows)
						}
						ops[c.Op]++
						var img workload.Row
						if c.After != nil {
							img = c.After
						} else {
							img = c.Before
						}
						k := c.Table.Name + "/" + string(img.AppendKey(nil, c.Table))
						cur, live := model[k]
						if live && owner[k] != stream {
							t.Fatalf("stream %d touched %s owned by stream %d", stream, k, owner[k])
						}
						switch c.Op {
						case format.OpInsert:
							if live {
								t.Fatalf("insert of live row %s", k)
							}
							model[k], owner[k] = string(c.After.AppendJSON(nil, c.Table)), stream
						case format.OpUpdate, format.OpDelete:
							if !live {
								t.Fatalf("%v of missing row %s", c.Op, k)
							}
							if got := string(c.Before.AppendJSON(nil, c.Table)); got != cur {
								t.Fatalf("%v of %s: before image %s, model has %s", c.Op, k, got, cur)
							}
							if c.Op == format.OpDelete {
								delete(model, k)
							} else {
								model[k] = string(c.After.AppendJSON(nil, c.Table))
							}
						}
						if c.After != nil && c.After[c.Table.VersionColumn()].I != tx.Version {
							t.Fatalf("row %s written with version %d by tx %d", k, c.After[c.Table.VersionColumn()].I, tx.Version)
						}
					}
				}
			}
			total := ops[format.OpInsert] + ops[format.OpUpdate] + ops[format.OpDelete]
			m := cfg.WithDefaults().Mix
			want := float64(m.Delete) / float64(m.Insert+m.Update+m.Delete)
			// Deletes fall back to inserts only when a stream owns nothing.
			got := float64(ops[format.OpDelete]) / float64(total)
			if !tc.sustained {
				// Deletes outrun inserts: once a stream owns nothing they
				// turn into inserts, so deletes end near half the changes.
				want = 0.5
			}
			if got > want+0.05 || got < want-0.05 {
				t.Errorf("deletes are %.3f of changes, want about %.3f (ops %v)", got, want, ops)
			}
		})
	}
}

func TestRowSizeAndJSON(t *testing.T) {
	for _, size := range []int{100, 200, 1000} {
		s, err := workload.NewStream(workload.Config{RowSize: size, Customers: 10, Products: 10, Orders: 10}, 0)
		if err != nil {
			t.Fatal(err)
		}
		var n, sum int
		for i := 0; i < 500; i++ {
			for _, c := range s.Next().Changes {
				if c.After == nil {
					continue
				}
				b := c.After.AppendJSON(nil, c.Table)
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("row JSON %s: %v", b, err)
				}
				if len(m) != len(c.Table.Columns) {
					t.Fatalf("row JSON %s has %d fields, want %d", b, len(m), len(c.Table.Columns))
				}
				n++
				sum += len(b)
			}
		}
		if avg := sum / n; avg < size*9/10 || avg > size*11/10+10 {
			t.Errorf("RowSize %d: rows average %d bytes of JSON", size, avg)
		}
	}
}

func TestAppendFormatRoundTrip(t *testing.T) {
	s, err := workload.NewStream(workload.Config{Seed: 3, Customers: 10, Products: 10, Orders: 10}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ftx, back format.Tx
	for i := 0; i < 300; i++ {
		tx := s.Next()
		tx.AppendFormat(&ftx, int64(i)+1e18, true)
		frame, err := format.AppendTx(nil, &ftx)
		if err != nil {
			t.Fatalf("AppendTx: %v", err)
		}
		payload := frame[format.FrameHeaderLen:]
		if err := format.DecodeTx(payload, &back); err != nil {
			t.Fatalf("DecodeTx: %v", err)
		}
		if got, want := back.ID, fmt.Sprint(tx.Version); got != want {
			t.Fatalf("ID=%q, want %q", got, want)
		}
		if back.CommitTime != int64(i)+1e18 || len(back.Changes) != len(tx.Changes) {
			t.Fatalf("decoded %+v", back)
		}
		for j, c := range tx.Changes {
			bc := back.Changes[j]
			if bc.Op != c.Op || bc.Table != c.Table.Name {
				t.Fatalf("change %d: %v %s, want %v %s", j, bc.Op, bc.Table, c.Op, c.Table.Name)
			}
			if c.Op == format.OpDelete && (len(bc.After) != 0 || bc.Before == nil) {
				t.Fatalf("delete %d: after %q before %q", j, bc.After, bc.Before)
			}
			if c.After != nil && !bytes.Equal(bc.After, c.After.AppendJSON(nil, c.Table)) {
				t.Fatalf("change %d after image differs", j)
			}
		}
	}
}

func TestStatementPlaceholders(t *testing.T) {
	s, err := workload.NewStream(workload.Config{Customers: 10, Products: 10, Orders: 10}, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 300; i++ {
		for _, st := range s.Next().Statements(nil) {
			if n := strings.Count(st.SQL, "$"); n != len(st.Args) {
				t.Fatalf("%s: %d placeholders, %d args", st.SQL, n, len(st.Args))
			}
			seen[strings.Fields(st.SQL)[0]] = true
		}
	}
	for _, verb := range []string{"INSERT", "UPDATE", "DELETE"} {
		if !seen[verb] {
			t.Errorf("no %s statement in 300 transactions", verb)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, cfg := range []workload.Config{
		{Streams: -1},
		{TxSize: -2},
		{RowSize: 3},
		{Mix: workload.Mix{Insert: -1, Update: 1}},
		{Streams: 10, Customers: 5},
		{Rate: -1},
	} {
		if _, err := workload.NewStream(cfg, 0); err == nil {
			t.Errorf("NewStream(%+v) accepted", cfg)
		}
	}
	if _, err := workload.NewStream(workload.Config{Streams: 2}, 2); err == nil {
		t.Error("stream 2 of 2 accepted")
	}
}

func TestPacer(t *testing.T) {
	p := workload.NewPacer(1000) // 1 ms per event
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 5; i++ {
		if err := p.Wait(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	// Five waits of 10 events: the fifth starts 40 ms after the first.
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("5 x 10 events at 1000/s took %v, want >= 40ms", d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := workload.NewPacer(1).Wait(cctx, 1); err == nil {
		t.Error("Wait on a cancelled context returned nil")
	}
}

// TestAppendFormatKeepsEarlierResults checks that a converted transaction
// stays valid after the next conversion into another Tx.
func TestAppendFormatKeepsEarlierResults(t *testing.T) {
	s, err := workload.NewStream(workload.Config{Seed: 5, Customers: 10, Products: 10, Orders: 10}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var first, second format.Tx
	tx := s.Next()
	tx.AppendFormat(&first, 1, false)
	want, err := format.AppendTx(nil, &first)
	if err != nil {
		t.Fatal(err)
	}
	s.Next().AppendFormat(&second, 2, false)
	got, err := format.AppendTx(nil, &first)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("converting a second transaction changed the first")
	}
}

// TestHotRows checks the hot rows: loaded once (by stream 0), updated by
// every stream, at most one per transaction and as its last statement, by a
// statement that returns the row (its placeholders matching its arguments);
// the returned row becomes the change's image, with its rev.
func TestHotRows(t *testing.T) {
	cfg := workload.Config{Seed: 2, Streams: 3, TxSize: 4, Customers: 30, Products: 30, Orders: 30, HotRows: 5, HotPct: 40}
	hot := map[int64]bool{}
	for i := 0; i < cfg.HotRows; i++ {
		hot[workload.HotSKU(i)] = true
	}
	for stream := 0; stream < cfg.Streams; stream++ {
		s, err := workload.NewStream(cfg, stream)
		if err != nil {
			t.Fatal(err)
		}
		loaded := 0
		for _, tr := range s.Initial() {
			for _, r := range tr.Rows {
				if tr.Table.Name == "stock" && hot[r[0].I] {
					loaded++
					if rev := r[tr.Table.RevColumn()].I; rev != 1 {
						t.Errorf("hot row %d loaded with rev %d, want 1", r[0].I, rev)
					}
				}
			}
		}
		if want := map[bool]int{true: cfg.HotRows, false: 0}[stream == 0]; loaded != want {
			t.Errorf("stream %d loads %d hot rows, want %d", stream, loaded, want)
		}
		withHot := 0
		const n = 2000
		for i := 0; i < n; i++ {
			tx := s.Next()
			if len(tx.Changes) != cfg.TxSize {
				t.Fatalf("tx of %d changes, want %d", len(tx.Changes), cfg.TxSize)
			}
			sts := tx.Statements(nil)
			for j := range tx.Changes {
				c := &tx.Changes[j]
				if !c.Returning() {
					if sts[j].Returning {
						t.Fatalf("statement %s returns a row for a change that is not hot", sts[j].SQL)
					}
					continue
				}
				withHot++
				if j != len(tx.Changes)-1 {
					t.Fatalf("hot update is change %d of %d, want the last", j, len(tx.Changes))
				}
				st := sts[j]
				if !st.Returning || st.Table.Name != "stock" || !strings.Contains(st.SQL, "RETURNING") || !strings.Contains(st.SQL, "rev = rev + 1") {
					t.Fatalf("hot statement %+v", st)
				}
				if n := strings.Count(st.SQL, "$"); n != len(st.Args) {
					t.Fatalf("%s: %d placeholders, %d args", st.SQL, n, len(st.Args))
				}
				if sku := st.Args[len(st.Args)-1].(int64); !hot[sku] {
					t.Fatalf("hot update of sku %d, not a hot row", sku)
				}
				// What a driver scans the returned row into.
				row := make(workload.Row, len(st.Table.Columns))
				for k, d := range row.ScanDest(st.Table) {
					switch d := d.(type) {
					case *int64:
						*d = int64(k + 7)
					case *string:
						*d = "p"
					}
				}
				c.SetReturned(row)
				if rev, ok := c.Rev(); !ok || rev != int64(st.Table.RevColumn()+7) {
					t.Fatalf("Rev() = %d, %v after SetReturned", rev, ok)
				}
			}
		}
		if pct := 100 * withHot / n; pct < 35 || pct > 45 {
			t.Errorf("stream %d: %d %% of transactions update a hot row, want about %d", stream, pct, cfg.HotPct)
		}
	}
}
