package check

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/ferrysync/ferry/receiver/store"
)

// GotRow is a row as a receiver serves it.
type GotRow struct {
	Key string
	// Value is the row's after image: for JSON rows the JSON document as
	// served, otherwise the raw bytes.
	Value []byte
	// Version is the receiver's version of the row, when it serves one as a
	// change id ("source:segment:offset:index"); empty otherwise.
	Version string
	// Load is the initial load the row's state came from, when the
	// receiver says (the API's "load"); empty for a row a change wrote.
	Load string
}

// Receiver is what the checker reads of a receiver: its rows, table by
// table, and its change feed.
type Receiver interface {
	// ScanRows calls fn for every row of table.
	ScanRows(ctx context.Context, table string, fn func(GotRow) error) error
	// ScanChanges calls fn with the id of every change in the feed, in
	// feed order. An initial load's changes have the source the receiver
	// gives them, "load:<id>" (receiver/README.md, "Initial load").
	ScanChanges(ctx context.Context, fn func(ChangeID) error) error
}

// Report is the outcome of a comparison. Lost and Duplicated must be zero.
type Report struct {
	// Written is the number of changes in the files (up to any corruption).
	Written int
	// Applied is the number of distinct changes in the receiver's feed.
	Applied int
	// Lost counts changes of the files absent from the feed.
	Lost int
	// Duplicated counts extra applications of a change (an id seen n times
	// counts n-1).
	Duplicated int
	// Unexpected counts feed changes that are not in the files' truth
	// (after a corruption, from a torn tail, or invented).
	Unexpected int
	// OutOfOrder counts feed changes that came before an earlier change of
	// their source.
	OutOfOrder int
	// LoadChanges counts the feed's initial-load rows: not changes of the
	// files, so not counted against them (a row may be sent twice); the
	// rows they brought are checked with the state.
	LoadChanges int
	// BaseRows is the number of base rows the truth started from.
	BaseRows int
	// Rows is the number of live rows expected; RowsMissing, RowsExtra and
	// RowsWrong count keys absent, present but deleted or never written,
	// and present with another value.
	Rows, RowsMissing, RowsExtra, RowsWrong int
	// Examples holds the first few differences, for the error message.
	Examples []string
	// FeedChecked says whether the change feed was counted.
	FeedChecked bool
}

const maxExamples = 10

func (r *Report) example(f string, args ...any) {
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(f, args...))
	}
}

// OK reports whether the receiver matched the truth exactly.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Unexpected == 0 && r.OutOfOrder == 0 && r.RowsMissing == 0 && r.RowsExtra == 0 && r.RowsWrong == 0
}

// Err returns nil if OK, else an error summarising the differences.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	return fmt.Errorf("check: receiver differs from the change files: %s; first differences: %s",
		r.String(), strings.Join(r.Examples, "; "))
}

func (r *Report) String() string {
	s := fmt.Sprintf("rows %d (missing %d, extra %d, wrong %d)", r.Rows, r.RowsMissing, r.RowsExtra, r.RowsWrong)
	if r.BaseRows > 0 {
		s += fmt.Sprintf(" over %d base rows", r.BaseRows)
	}
	if r.FeedChecked && r.LoadChanges > 0 {
		s += fmt.Sprintf("; %d initial-load rows in the feed", r.LoadChanges)
	}
	if r.FeedChecked {
		s = fmt.Sprintf("written %d, applied %d, lost %d, duplicated %d, unexpected %d, out of order %d; ", r.Written, r.Applied, r.Lost, r.Duplicated, r.Unexpected, r.OutOfOrder) + s
	}
	return s
}

// Options of a comparison.
type Options struct {
	// SkipFeed compares the state only, not the change feed (for receivers
	// whose change log is trimmed).
	SkipFeed bool
	// ExtraTables are scanned besides the truth's tables, to catch rows in
	// tables the files never wrote.
	ExtraTables []string
}

// Compare reads the receiver's state and feed and compares them with t.
func Compare(ctx context.Context, t *Truth, rc Receiver, o Options) (*Report, error) {
	if t.conflicts > 0 {
		return nil, fmt.Errorf("check: %d keys are written by more than one source, e.g. %s: their final value depends on how a receiver interleaves the sources; give each source its own tables or keys",
			t.conflicts, strings.Join(t.Conflicts, ", "))
	}
	r := &Report{Written: t.Changes(), Rows: t.Rows(), BaseRows: t.BaseRows}
	if err := compareState(ctx, t, rc, o, r); err != nil {
		return r, err
	}
	if o.SkipFeed {
		return r, nil
	}
	r.FeedChecked = true
	return r, compareFeed(ctx, t, rc, r)
}

func compareState(ctx context.Context, t *Truth, rc Receiver, o Options, r *Report) error {
	tables := make([]string, 0, len(t.Tables)+len(o.ExtraTables))
	for name := range t.Tables {
		tables = append(tables, name)
	}
	for _, name := range o.ExtraTables {
		if _, ok := t.Tables[name]; !ok {
			tables = append(tables, name)
		}
	}
	sort.Strings(tables)
	for _, table := range tables {
		want := t.Tables[table]
		seen := make(map[string]bool, len(want))
		err := rc.ScanRows(ctx, table, func(g GotRow) error {
			if seen[g.Key] {
				r.RowsWrong++
				r.example("%s/%s served twice by the scan", table, g.Key)
				return nil
			}
			seen[g.Key] = true
			w, ok := want[g.Key]
			if !ok {
				r.RowsExtra++
				r.example("%s/%s present in the receiver, deleted or never written in the files", table, g.Key)
				return nil
			}
			if !sameValue(w.Value, g.Value) {
				r.RowsWrong++
				r.example("%s/%s = %.80q, files say %.80q (written by %s)", table, g.Key, g.Value, w.Value, w.writer())
				return nil
			}
			switch {
			case w.Base:
				// Only an initial load brings a row no change wrote.
				if g.Version != "" && g.Load == "" {
					r.RowsWrong++
					r.example("%s/%s at version %s, not from an initial load: no change of the files wrote it (a base row)", table, g.Key, g.Version)
				}
			case g.Version != "" && g.Version != w.Version.String():
				r.RowsWrong++
				r.example("%s/%s at version %s, files say %s", table, g.Key, g.Version, w.Version)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("check: scanning table %s: %w", table, err)
		}
		if len(seen) < len(want) {
			for key, w := range want {
				if !seen[key] {
					r.RowsMissing++
					r.example("%s/%s missing from the receiver (written by %s)", table, key, w.writer())
				}
			}
		}
	}
	return nil
}

// sameValue compares two images: equal bytes, or equal JSON documents
// (a receiver may re-encode JSON).
func sameValue(want, got []byte) bool {
	if bytes.Equal(want, got) {
		return true
	}
	var a, b any
	da, db := json.NewDecoder(bytes.NewReader(want)), json.NewDecoder(bytes.NewReader(got))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&a) != nil || db.Decode(&b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// feedID is a ChangeID without its source, for compact per-source lists.
type feedID struct {
	seg uint64
	off int64
	idx int32
}

func (a feedID) less(b feedID) bool {
	if a.seg != b.seg {
		return a.seg < b.seg
	}
	if a.off != b.off {
		return a.off < b.off
	}
	return a.idx < b.idx
}

func compareFeed(ctx context.Context, t *Truth, rc Receiver, r *Report) error {
	got := map[string][]feedID{}
	err := rc.ScanChanges(ctx, func(id ChangeID) error {
		if _, ok := store.LoadOf(id.Source); ok {
			r.LoadChanges++
			return nil
		}
		f := feedID{id.Segment, id.Offset, int32(id.Index)}
		if l := got[id.Source]; len(l) > 0 && f.less(l[len(l)-1]) {
			r.OutOfOrder++
			r.example("change %s applied after %s", id, ChangeID{id.Source, l[len(l)-1].seg, l[len(l)-1].off, int(l[len(l)-1].idx)})
		}
		got[id.Source] = append(got[id.Source], f)
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: reading the change feed: %w", err)
	}
	for name, ids := range got {
		if _, ok := t.Sources[name]; !ok {
			r.Unexpected += len(ids)
			r.example("%d changes of source %s, which has no files", len(ids), name)
		}
	}
	for _, name := range t.SourceNames() {
		src := t.Sources[name]
		g := got[name]
		sort.Slice(g, func(i, j int) bool { return g[i].less(g[j]) })
		want := src.ids
		i, j := 0, 0
		for i < len(want) || j < len(g) {
			switch {
			case j < len(g) && j > 0 && g[j] == g[j-1]:
				r.Duplicated++
				r.example("change %s applied more than once", ChangeID{name, g[j].seg, g[j].off, int(g[j].idx)})
				j++
			case j >= len(g) || (i < len(want) && feedID{want[i].Segment, want[i].Offset, int32(want[i].Index)}.less(g[j])):
				r.Lost++
				r.example("change %s never applied", want[i])
				i++
			case i >= len(want) || g[j].less(feedID{want[i].Segment, want[i].Offset, int32(want[i].Index)}):
				r.Unexpected++
				r.example("change %s applied but not in the files' truth", ChangeID{name, g[j].seg, g[j].off, int(g[j].idx)})
				j++
			default:
				r.Applied++
				i++
				j++
			}
		}
	}
	return nil
}
