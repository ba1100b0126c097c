package jsonl_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/jsonl"
)

// collect is a Committer that keeps what it is given.
type collect struct{ txs []format.Tx }

func (c *collect) Commit(tx *format.Tx) (format.Position, error) {
	if err := format.ValidateTx(tx); err != nil {
		return format.Position{}, err
	}
	c.txs = append(c.txs, *tx)
	return format.Position{Segment: 1, Offset: int64(len(c.txs))}, nil
}

func TestCopy(t *testing.T) {
	in := `{"table":"a","op":"upsert","key":42,"after":{"n":1},"version":7}
{"table":"a","op":"update","key":"x","after":"s","tx":"t","version":18446744073709551615}
{"table":"b","op":"delete","key":"y","before":{"n":2},"tx":"t","commit_time":"2026-01-01T00:00:00Z"}
`
	var c collect
	sum, err := jsonl.Copy(context.Background(), strings.NewReader(in), &c)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Txs != 2 || sum.Changes != 3 || len(c.txs) != 2 {
		t.Fatalf("summary %+v, %d transactions committed; want 2 and 3 changes", sum, len(c.txs))
	}
	if got := c.txs[0].Changes[0]; string(got.Key) != "42" || got.Version != 7 || string(got.After) != `{"n":1}` {
		t.Errorf("first change %+v, want key 42 version 7", got)
	}
	second := c.txs[1]
	if second.ID != "t" || len(second.Changes) != 2 || second.Changes[0].Version != 1<<64-1 || second.Changes[1].Version != 0 ||
		second.CommitTime != 1767225600000000000 {
		t.Errorf("second transaction %+v, want t with versions max and none, commit 2026-01-01", second)
	}
}

// TestCopyRefuses: every bad line is named by number and described in the
// input's terms (field names, JSON kinds; never a Go type), and nothing of
// its transaction is committed while every transaction before it is.
func TestCopyRefuses(t *testing.T) {
	good := `{"table":"a","op":"upsert","key":"1","after":{},"tx":"t1"}` + "\n" +
		`{"table":"a","op":"upsert","key":"2","after":{},"tx":"t2"}` + "\n"
	for _, tc := range []struct {
		name, line string
		want       []string
		committed  int // transactions committed before the error
	}{
		{"VersionZero", `{"table":"a","op":"upsert","key":"3","after":{},"tx":"t2","version":0}`, []string{"line 3", "version 0", "from 1"}, 1},
		{"VersionNegative", `{"table":"a","op":"upsert","key":"3","after":{},"tx":"t2","version":-1}`, []string{"line 3", "version -1"}, 1},
		{"VersionText", `{"table":"a","op":"upsert","key":"3","after":{},"tx":"t2","version":"3"}`, []string{"line 3", `version "3"`}, 1},
		{"VersionFraction", `{"table":"a","op":"upsert","key":"3","after":{},"tx":"t2","version":1.5}`, []string{"line 3", "version 1.5"}, 1},
		// JSON that is not an object: its transaction cannot be told, so
		// the one being collected is refused too.
		{"Array", `[1,2,3]`, []string{"line 3", "must be a JSON object", "JSON array", `transaction "t2" (from line 2)`}, 1},
		{"String", `"hello"`, []string{"line 3", "JSON string"}, 1},
		{"TableNumber", `{"table":5,"op":"upsert","key":"3","after":{},"tx":"t2"}`, []string{"line 3", `"table" is a JSON number, want a string`, `transaction "t2"`}, 1},
		{"OpArray", `{"table":"a","op":["upsert"],"key":"3","after":{},"tx":"t2"}`, []string{`"op" is a JSON array, want a string`}, 1},
		{"UnknownField", `{"table":"a","op":"upsert","key":"3","after":{},"tx":"t2","colour":1}`, []string{`unknown field "colour"`, "version"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c collect
			_, err := jsonl.Copy(context.Background(), strings.NewReader(good+tc.line+"\n"), &c)
			if err == nil {
				t.Fatal("Copy accepted the line")
			}
			for _, w := range append(tc.want, "line 3") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to say %q", err, w)
				}
			}
			for _, goName := range []string{"Go ", "jsonl.", "main.", "struct", "RawMessage"} {
				if strings.Contains(err.Error(), goName) {
					t.Errorf("error %q names a Go type (%q)", err, goName)
				}
			}
			if len(c.txs) != tc.committed {
				t.Errorf("%d transactions committed, want %d", len(c.txs), tc.committed)
			}
		})
	}
}
