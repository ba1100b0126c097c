package check_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/format"
)

// tx builds a transaction upserting key=value pairs of table, or deleting
// where value is "".
func tx(commit int64, table string, kv ...string) *format.Tx {
	t := &format.Tx{CommitTime: commit}
	for i := 0; i < len(kv); i += 2 {
		c := format.Change{Table: table, Op: format.OpUpsert, Key: []byte(kv[i]), After: []byte(kv[i+1])}
		if kv[i+1] == "" {
			c.Op, c.After = format.OpDelete, nil
		}
		t.Changes = append(t.Changes, c)
	}
	return t
}

func commitAll(t *testing.T, w *format.Writer, txs ...*format.Tx) {
	t.Helper()
	for _, x := range txs {
		if _, err := w.Commit(x); err != nil {
			t.Fatal(err)
		}
	}
}

// crashedSegment writes, as a crashed writer leaves it, segment seg of
// source: a header, whole frames and, if torn > 0, the first torn bytes of
// one more frame; no seal.
func crashedSegment(t *testing.T, dir, source string, seg uint64, torn int, txs ...*format.Tx) {
	t.Helper()
	b, err := format.AppendHeader(nil, format.SegmentHeader{Source: source, Segment: seg, Created: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range txs {
		n := len(b)
		if b, err = format.AppendTx(b, x); err != nil {
			t.Fatal(err)
		}
		if i == len(txs)-1 && torn > 0 {
			b = b[:n+torn]
		}
	}
	if err := os.WriteFile(filepath.Join(dir, format.SegmentName(source, seg)), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFromDir(t *testing.T) {
	t.Run("SealedSegments", func(t *testing.T) {
		dir := t.TempDir()
		w, err := format.OpenWriter(dir, "shop", format.WithSync(format.SyncNone, 0))
		if err != nil {
			t.Fatal(err)
		}
		commitAll(t, w, tx(1, "orders", "1", `{"a":1}`, "2", `{"a":2}`), tx(2, "orders", "1", `{"a":3}`))
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
		commitAll(t, w, tx(3, "orders", "2", ""), tx(4, "stock", "x", `{"q":5}`))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		truth, err := check.FromDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		src := truth.Sources["shop"]
		if got, want := src.Changes, 5; got != want {
			t.Errorf("Changes = %d, want %d", got, want)
		}
		if got, want := src.Transactions, 4; got != want {
			t.Errorf("Transactions = %d, want %d", got, want)
		}
		if got, want := src.Segments, 2; got != want {
			t.Errorf("Segments = %d, want %d", got, want)
		}
		if src.Stopped != nil || len(src.Torn) != 0 {
			t.Errorf("Stopped = %v, Torn = %v, want neither", src.Stopped, src.Torn)
		}
		if got, want := string(truth.Tables["orders"]["1"].Value), `{"a":3}`; got != want {
			t.Errorf("orders/1 = %s, want %s", got, want)
		}
		if _, ok := truth.Tables["orders"]["2"]; ok {
			t.Errorf("orders/2 present, want deleted")
		}
		if got, want := truth.Rows(), 2; got != want {
			t.Errorf("Rows() = %d, want %d", got, want)
		}
		ids := src.IDs()
		if ids[0].Segment != 1 || ids[0].Index != 0 || ids[1].Index != 1 || ids[3].Segment != 2 {
			t.Errorf("ids = %v, want segment 1 (two changes of one frame), then segment 2", ids)
		}
	})
	t.Run("TornTail", func(t *testing.T) {
		dir := t.TempDir()
		crashedSegment(t, dir, "shop", 1, 7, tx(1, "orders", "1", `{"a":1}`), tx(2, "orders", "1", `{"torn":true}`, "9", `{}`))
		w, err := format.OpenWriter(dir, "shop")
		if err != nil {
			t.Fatal(err)
		}
		commitAll(t, w, tx(3, "orders", "2", `{"b":2}`))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		truth, err := check.FromDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		src := truth.Sources["shop"]
		if got, want := src.Changes, 2; got != want {
			t.Errorf("Changes = %d, want %d (the torn transaction excluded)", got, want)
		}
		if len(src.Torn) != 1 || !strings.Contains(src.Torn[0], format.SegmentName("shop", 1)) {
			t.Errorf("Torn = %v, want one tail in segment 1", src.Torn)
		}
		if got, want := string(truth.Tables["orders"]["1"].Value), `{"a":1}`; got != want {
			t.Errorf("orders/1 = %s, want %s", got, want)
		}
		if _, ok := truth.Tables["orders"]["9"]; ok {
			t.Errorf("orders/9 of the torn transaction present")
		}
	})
	t.Run("CorruptMiddle", func(t *testing.T) {
		dir := t.TempDir()
		crashedSegment(t, dir, "bad", 1, 0, tx(1, "t", "1", `1`), tx(2, "t", "2", `2`), tx(3, "t", "3", `3`))
		crashedSegment(t, dir, "bad", 2, 0, tx(4, "t", "4", `4`))
		crashedSegment(t, dir, "good", 1, 0, tx(1, "u", "1", `1`), tx(2, "u", "2", `2`))
		path := filepath.Join(dir, format.SegmentName("bad", 1))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Flip the last payload byte of the second frame.
		hdr, _ := format.ParseHeader(b)
		first := format.FrameLen(b[hdr.Len:])
		second := hdr.Len + first
		b[second+format.FrameLen(b[second:])-1] ^= 0xff
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		truth, err := check.FromDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		bad := truth.Sources["bad"]
		var pe *format.PositionError
		if !errors.As(bad.Stopped, &pe) || !errors.Is(bad.Stopped, format.ErrChecksum) || pe.Offset != int64(second) || pe.Path != path {
			t.Fatalf("Stopped = %v, want a checksum error at %s offset %d", bad.Stopped, path, second)
		}
		if got, want := bad.Changes, 1; got != want {
			t.Errorf("bad Changes = %d, want %d (nothing from the corrupt frame on)", got, want)
		}
		if got, want := truth.Sources["good"].Changes, 2; got != want {
			t.Errorf("good Changes = %d, want %d", got, want)
		}
		if _, ok := truth.Tables["t"]["4"]; ok {
			t.Errorf("t/4 after the corruption is in the truth")
		}
	})
}

// memReceiver is a receiver's state held in memory, to exercise the
// comparison itself (the fault suite runs it against real receivers).
type memReceiver struct {
	rows  map[string][]check.GotRow
	feed  []check.ChangeID
	fails error
}

func (m *memReceiver) ScanRows(_ context.Context, table string, fn func(check.GotRow) error) error {
	for _, r := range m.rows[table] {
		if err := fn(r); err != nil {
			return err
		}
	}
	return m.fails
}

func (m *memReceiver) ScanChanges(_ context.Context, fn func(check.ChangeID) error) error {
	for _, id := range m.feed {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

func TestCompare(t *testing.T) {
	dir := t.TempDir()
	crashedSegment(t, dir, "shop", 1, 0, tx(1, "orders", "1", `{"a": 1}`, "2", `{"a":2}`), tx(2, "orders", "2", ""), tx(3, "orders", "3", `{"c":[1,2]}`))
	truth, err := check.FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := truth.Sources["shop"].IDs()
	exact := func() *memReceiver {
		return &memReceiver{
			rows: map[string][]check.GotRow{"orders": {
				{Key: "1", Value: []byte(`{"a":1}`), Version: ids[0].String()}, // re-encoded JSON is equal
				{Key: "3", Value: []byte(`{"c":[1,2]}`)},
			}},
			feed: append([]check.ChangeID(nil), ids...),
		}
	}
	cases := []struct {
		name   string
		mutate func(m *memReceiver)
		check  func(r *check.Report) bool
	}{
		{"Exact", func(m *memReceiver) {}, func(r *check.Report) bool { return r.OK() && r.Applied == 4 && r.Written == 4 }},
		{"Lost", func(m *memReceiver) { m.feed = m.feed[:3] }, func(r *check.Report) bool { return r.Lost == 1 && !r.OK() }},
		{"Duplicated", func(m *memReceiver) { m.feed = append(m.feed, ids[1], ids[1]) }, func(r *check.Report) bool {
			return r.Duplicated == 2 && r.Lost == 0 && r.OutOfOrder == 1
		}},
		{"Unexpected", func(m *memReceiver) { m.feed = append(m.feed, check.ChangeID{Source: "shop", Segment: 9}) }, func(r *check.Report) bool { return r.Unexpected == 1 }},
		{"OtherSource", func(m *memReceiver) { m.feed = append(m.feed, check.ChangeID{Source: "ghost", Segment: 1}) }, func(r *check.Report) bool { return r.Unexpected == 1 }},
		{"RowMissing", func(m *memReceiver) { m.rows["orders"] = m.rows["orders"][:1] }, func(r *check.Report) bool { return r.RowsMissing == 1 }},
		{"RowExtra", func(m *memReceiver) {
			m.rows["orders"] = append(m.rows["orders"], check.GotRow{Key: "2", Value: []byte(`{"a":2}`)})
		}, func(r *check.Report) bool { return r.RowsExtra == 1 }},
		{"RowWrong", func(m *memReceiver) { m.rows["orders"][1].Value = []byte(`{"c":[2,1]}`) }, func(r *check.Report) bool { return r.RowsWrong == 1 }},
		{"VersionWrong", func(m *memReceiver) { m.rows["orders"][0].Version = ids[1].String() }, func(r *check.Report) bool { return r.RowsWrong == 1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := exact()
			c.mutate(m)
			r, err := check.Compare(context.Background(), truth, m, check.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(r) {
				t.Errorf("report %s; examples %v", r, r.Examples)
			}
			if (r.Err() == nil) != r.OK() {
				t.Errorf("Err() = %v with OK() = %v", r.Err(), r.OK())
			}
		})
	}
	t.Run("ScanError", func(t *testing.T) {
		m := exact()
		m.fails = fmt.Errorf("connection refused")
		if _, err := check.Compare(context.Background(), truth, m, check.Options{}); err == nil || !strings.Contains(err.Error(), "orders") {
			t.Errorf("Compare = %v, want an error naming the table", err)
		}
	})
}

func TestParseChangeID(t *testing.T) {
	id := check.ChangeID{Source: "shop-1", Segment: 3, Offset: 4096, Index: 7}
	got, err := check.ParseChangeID(id.String())
	if err != nil || got != id {
		t.Errorf("ParseChangeID(%q) = %v, %v; want %v", id.String(), got, err, id)
	}
	for _, bad := range []string{"", "shop:1:2", "shop:x:2:3", "sh op:1:2:3", "shop:1:2:3:4"} {
		if _, err := check.ParseChangeID(bad); err == nil {
			t.Errorf("ParseChangeID(%q) succeeded, want an error", bad)
		}
	}
}

func TestCompareRefusesConflicts(t *testing.T) {
	dir := t.TempDir()
	crashedSegment(t, dir, "a", 1, 0, tx(1, "orders", "1", `{"a":1}`))
	crashedSegment(t, dir, "b", 1, 0, tx(1, "orders", "1", `{"b":1}`), tx(2, "orders", "2", `{"b":2}`))
	truth, err := check.FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(truth.Conflicts) != 1 || !strings.Contains(truth.Conflicts[0], "orders/1") {
		t.Fatalf("Conflicts = %v, want orders/1", truth.Conflicts)
	}
	_, err = check.Compare(context.Background(), truth, &memReceiver{}, check.Options{})
	if err == nil || !strings.Contains(err.Error(), "more than one source") {
		t.Errorf("Compare = %v, want an error about keys of several sources", err)
	}
}

// TestCompareWithBase: the truth of a legacy with existing rows is its base
// rows (a dump an initial load sends) with the change files applied over
// them; a receiver must hold every base row, stale or resurrected ones are
// differences, and the feed's load rows are not changes of the files.
func TestCompareWithBase(t *testing.T) {
	dir := t.TempDir()
	crashedSegment(t, dir, "shop", 1, 0, tx(1, "orders", "1", `{"a":10}`), tx(2, "orders", "2", "", "3", `{"a":3}`))
	base := map[string]map[string][]byte{
		"orders": {"1": []byte(`{"a":1}`), "2": []byte(`{"a":2}`), "5": []byte(`{"a":5}`)},
		"stock":  {"x": []byte(`{"q":1}`)},
	}
	truth, err := check.FromDir(dir, check.WithBase(base))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("Truth", func(t *testing.T) {
		if got, want := truth.BaseRows, 4; got != want {
			t.Errorf("BaseRows = %d, want %d", got, want)
		}
		orders := truth.Tables["orders"]
		if r := orders["1"]; r.Base || string(r.Value) != `{"a":10}` {
			t.Errorf("orders/1 = %s (base %v), want the update over the base row", r.Value, r.Base)
		}
		if _, ok := orders["2"]; ok {
			t.Errorf("orders/2 present, want the base row deleted by the change")
		}
		if r := orders["5"]; !r.Base || string(r.Value) != `{"a":5}` {
			t.Errorf("orders/5 = %s (base %v), want the base row as it was", r.Value, r.Base)
		}
		if got, want := truth.Rows(), 4; got != want { // orders 1, 3, 5; stock x
			t.Errorf("Rows() = %d, want %d", got, want)
		}
		if len(truth.Conflicts) != 0 {
			t.Errorf("Conflicts = %v: base rows have no source, want none", truth.Conflicts)
		}
	})
	ids := truth.Sources["shop"].IDs()
	load := func(part, idx int) check.ChangeID {
		return check.ChangeID{Source: "load:L1", Segment: 0, Offset: int64(part), Index: idx}
	}
	exact := func() *memReceiver {
		return &memReceiver{
			rows: map[string][]check.GotRow{
				"orders": {
					{Key: "1", Value: []byte(`{"a":10}`), Version: ids[0].String()},
					{Key: "3", Value: []byte(`{"a":3}`), Version: ids[2].String()},
					{Key: "5", Value: []byte(`{"a":5}`), Version: load(0, 2).String(), Load: "L1"},
				},
				"stock": {{Key: "x", Value: []byte(`{"q":1}`), Version: load(1, 0).String(), Load: "L1"}},
			},
			// The chunk arrived after the first change (its row for
			// orders/1 dropped) and before the delete.
			feed: []check.ChangeID{ids[0], load(0, 0), load(0, 1), load(0, 2), load(1, 0), ids[1], ids[2]},
		}
	}
	cases := []struct {
		name   string
		mutate func(m *memReceiver)
		check  func(r *check.Report) bool
	}{
		{"Exact", func(m *memReceiver) {}, func(r *check.Report) bool {
			return r.OK() && r.Applied == 3 && r.Written == 3 && r.LoadChanges == 4 && r.Rows == 4 && r.BaseRows == 4
		}},
		{"BaseRowMissing", func(m *memReceiver) { m.rows["orders"] = m.rows["orders"][:2] }, func(r *check.Report) bool { return r.RowsMissing == 1 }},
		{"BaseTableMissing", func(m *memReceiver) { delete(m.rows, "stock") }, func(r *check.Report) bool { return r.RowsMissing == 1 }},
		{"BaseRowStale", func(m *memReceiver) {
			// The load's row overwrote the newer live change.
			m.rows["orders"][0] = check.GotRow{Key: "1", Value: []byte(`{"a":1}`), Version: load(0, 0).String(), Load: "L1"}
		}, func(r *check.Report) bool { return r.RowsWrong == 1 }},
		{"BaseRowWrongValue", func(m *memReceiver) { m.rows["orders"][2].Value = []byte(`{"a":6}`) }, func(r *check.Report) bool { return r.RowsWrong == 1 }},
		{"BaseRowResurrected", func(m *memReceiver) {
			// A late chunk brought back the row the change deleted.
			m.rows["orders"] = append(m.rows["orders"], check.GotRow{Key: "2", Value: []byte(`{"a":2}`), Version: load(0, 1).String(), Load: "L1"})
		}, func(r *check.Report) bool { return r.RowsExtra == 1 }},
		{"BaseRowNotFromLoad", func(m *memReceiver) {
			m.rows["orders"][2] = check.GotRow{Key: "5", Value: []byte(`{"a":5}`), Version: ids[0].String()}
		}, func(r *check.Report) bool { return r.RowsWrong == 1 }},
		{"LiveChangeLost", func(m *memReceiver) { m.feed = m.feed[1:] }, func(r *check.Report) bool { return r.Lost == 1 && r.LoadChanges == 4 }},
		{"LiveChangeTwice", func(m *memReceiver) { m.feed = append(m.feed, ids[2]) }, func(r *check.Report) bool { return r.Duplicated == 1 }},
		{"LoadRowsTwice", func(m *memReceiver) {
			// A chunk sent again (a resumed loader) is harmless.
			m.feed = append(m.feed, load(0, 0), load(0, 1), load(0, 2))
		}, func(r *check.Report) bool { return r.OK() && r.LoadChanges == 7 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := exact()
			c.mutate(m)
			r, err := check.Compare(context.Background(), truth, m, check.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(r) {
				t.Errorf("report %s; examples %v", r, r.Examples)
			}
			if c.name != "Exact" && c.name != "LoadRowsTwice" && r.OK() {
				t.Errorf("report OK, want a difference")
			}
		})
	}
}
