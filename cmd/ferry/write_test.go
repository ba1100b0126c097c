package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// runFerry runs ferry in-process with stdin and returns stdout, stderr and
// the exit status main would use.
func runFerry(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &Env{Stdin: stdin, Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err := run(context.Background(), env, args)
	code := 0
	if err != nil {
		code = 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if !errors.Is(err, errUsageShown) {
			fmt.Fprintln(&errOut, "ferry:", err)
		}
	}
	return out.String(), errOut.String(), code
}

// inputLine is a line of ferry write's input as the tests generate it.
type inputLine struct {
	Table      string          `json:"table"`
	Op         string          `json:"op"`
	Key        string          `json:"key"`
	After      json.RawMessage `json:"after,omitempty"`
	Before     json.RawMessage `json:"before,omitempty"`
	Tx         string          `json:"tx,omitempty"`
	Origin     string          `json:"origin,omitempty"`
	CommitTime string          `json:"commit_time,omitempty"`
}

// outputLine is a line of ferry inspect --json.
type outputLine struct {
	Table      string          `json:"table"`
	Op         string          `json:"op"`
	Key        string          `json:"key"`
	After      json.RawMessage `json:"after"`
	Before     json.RawMessage `json:"before"`
	Content    string          `json:"content"`
	Tx         string          `json:"tx"`
	Origin     string          `json:"origin"`
	CommitTime string          `json:"commit_time"`
	Version    uint64          `json:"version"`
	Position   struct {
		Source  string `json:"source"`
		Segment uint64 `json:"segment"`
		Offset  int64  `json:"offset"`
		Index   int    `json:"index"`
	} `json:"position"`
}

// genLines makes n changes in transactions of 1-5 changes, about 200 bytes
// of image each, with every optional field used somewhere.
func genLines(n int) []inputLine {
	r := rand.New(rand.NewPCG(1, 2))
	ops := []string{"insert", "update", "upsert", "delete"}
	var lines []inputLine
	for txn := 0; len(lines) < n; txn++ {
		size := 1 + r.IntN(5)
		tx := ""
		if txn%7 != 0 || size > 1 {
			tx = fmt.Sprintf("tx-%d", txn)
		}
		origin := ""
		if txn%5 == 0 {
			origin = "svc-orders"
		}
		commit := time.Unix(1_767_225_600, int64(txn)*1_000_003).UTC().Format(time.RFC3339Nano)
		for i := 0; i < size && len(lines) < n; i++ {
			op := ops[r.IntN(4)]
			l := inputLine{Table: []string{"orders", "order_lines", "stock"}[r.IntN(3)], Op: op,
				Key: fmt.Sprintf("%d/%d", txn, i), Tx: tx, Origin: origin, CommitTime: commit}
			img := fmt.Sprintf(`{"id":%d,"note":"%s","qty":%d,"price":%d.%02d,"tags":["a","b\"q"],"nested":{"x":null,"ok":true}}`,
				txn, strings.Repeat("z", 60+r.IntN(60)), r.IntN(100), r.IntN(1000), r.IntN(100))
			if op != "delete" {
				l.After = json.RawMessage(img)
			}
			if op == "delete" || r.IntN(3) == 0 {
				l.Before = json.RawMessage(`{"id":` + fmt.Sprint(txn) + `,"old":"ü\u00e9\n"}`)
			}
			lines = append(lines, l)
		}
	}
	return lines
}

func encodeLines(t *testing.T, lines []inputLine) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for i := range lines {
		if err := enc.Encode(&lines[i]); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func decodeOutput(t *testing.T, out string) []outputLine {
	t.Helper()
	var got []outputLine
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var o outputLine
		if err := dec.Decode(&o); err == io.EOF {
			return got
		} else if err != nil {
			t.Fatalf("inspect --json output line %d: %v", len(got)+1, err)
		}
		got = append(got, o)
	}
}

func compactEq(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return false
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}

func TestWriteInspectRoundTrip100k(t *testing.T) {
	dir := t.TempDir()
	lines := genLines(100_000)
	_, stderr, code := runFerry(t, bytes.NewReader(encodeLines(t, lines)),
		"write", "--dir", dir, "--source", "shop", "--sync", "none", "--max-segment-size", "2MiB")
	if code != 0 {
		t.Fatalf("ferry write exited %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "100000 changes") {
		t.Fatalf("summary %q does not count 100000 changes", stderr)
	}
	out, stderr, code := runFerry(t, nil, "inspect", "--verify", "--json", dir)
	if code != 0 {
		t.Fatalf("ferry inspect exited %d: %s", code, stderr)
	}
	got := decodeOutput(t, out)
	if len(got) != len(lines) {
		t.Fatalf("inspect printed %d changes, wrote %d", len(got), len(lines))
	}
	segs := map[uint64]bool{}
	var prev outputLine
	for i, g := range got {
		w := lines[i]
		if g.Table != w.Table || g.Op != w.Op || g.Key != w.Key || g.Tx != w.Tx || g.Origin != w.Origin ||
			g.CommitTime != w.CommitTime || g.Content != "json" || !compactEq(g.After, w.After) || !compactEq(g.Before, w.Before) {
			t.Fatalf("change %d:\n wrote %+v\n   got %+v", i, w, g)
		}
		segs[g.Position.Segment] = true
		if i > 0 {
			p, q := format.Position{Segment: prev.Position.Segment, Offset: prev.Position.Offset}, format.Position{Segment: g.Position.Segment, Offset: g.Position.Offset}
			sameTx := w.Tx != "" && w.Tx == lines[i-1].Tx
			if sameTx && (p != q || g.Position.Index != prev.Position.Index+1) || !sameTx && (!p.Less(q) || g.Position.Index != 0) {
				t.Fatalf("change %d at %+v after %+v (tx %q after %q)", i, g.Position, prev.Position, w.Tx, lines[i-1].Tx)
			}
		}
		prev = g
	}
	if len(segs) < 5 {
		t.Fatalf("changes in %d segments, want rotation at 2 MiB", len(segs))
	}
}

func TestWriteRefusesBadLines(t *testing.T) {
	good := `{"table":"orders","op":"upsert","key":"1","after":{"a":1},"tx":"t1"}`
	cases := []struct {
		name     string
		input    string // the bad line is line 3, in transaction t2 with line 2
		wantLine string
		wantMsg  string
	}{
		{"InvalidJSON", `{"table":"orders",`, "line 3", "not JSON"},
		{"UnknownField", `{"table":"orders","op":"upsert","key":"2","after":{},"tx":"t2","colour":"red"}`, "line 3", "unknown field"},
		{"MissingTable", `{"op":"upsert","key":"2","after":{},"tx":"t2"}`, "line 3", `missing "table"`},
		{"BadOp", `{"table":"orders","op":"merge","key":"2","after":{},"tx":"t2"}`, "line 3", "unknown op"},
		{"ObjectKey", `{"table":"orders","op":"upsert","key":{"id":2},"after":{},"tx":"t2"}`, "line 3", "key"},
		{"EmptyKey", `{"table":"orders","op":"upsert","key":"","after":{},"tx":"t2"}`, "line 3", "empty key"},
		{"DeleteWithAfter", `{"table":"orders","op":"delete","key":"2","after":{},"tx":"t2"}`, "line 3", "delete has no"},
		{"InsertWithoutAfter", `{"table":"orders","op":"insert","key":"2","tx":"t2"}`, "line 3", `missing "after"`},
		{"OriginDiffers", `{"table":"orders","op":"upsert","key":"2","after":{},"tx":"t2","origin":"other"}`, "line 3", "origin"},
		{"CommitTimeDiffers", `{"table":"orders","op":"upsert","key":"2","after":{},"tx":"t2","commit_time":5}`, "line 3", "commit_time"},
		{"BadCommitTime", `{"table":"orders","op":"upsert","key":"2","after":{},"tx":"t2","commit_time":"yesterday"}`, "line 3", "RFC 3339"},
		{"KeyTooLong", `{"table":"orders","op":"upsert","key":"` + strings.Repeat("k", format.MaxKeyLen+1) + `","after":{},"tx":"t2"}`, "line 3", "key of"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			input := good + "\n" +
				`{"table":"orders","op":"upsert","key":"2","after":{"b":2},"tx":"t2","origin":"svc","commit_time":1}` + "\n" +
				c.input + "\n" +
				`{"table":"orders","op":"upsert","key":"9","after":{},"tx":"t3"}` + "\n"
			_, stderr, code := runFerry(t, strings.NewReader(input), "write", "--dir", dir, "--source", "shop")
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr %s", code, stderr)
			}
			if !strings.Contains(stderr, c.wantLine) || !strings.Contains(stderr, c.wantMsg) || !strings.Contains(stderr, `transaction "t2"`) {
				t.Fatalf("stderr %q, want it to name %s, say %q and that nothing of t2 was written", stderr, c.wantLine, c.wantMsg)
			}
			out, _, _ := runFerry(t, nil, "inspect", "--json", dir)
			got := decodeOutput(t, out)
			if len(got) != 1 || got[0].Tx != "t1" {
				t.Fatalf("after the bad line the files hold %+v, want transaction t1 only", got)
			}
		})
	}
}

func TestWriteBadLineStartingATransaction(t *testing.T) {
	dir := t.TempDir()
	input := `{"table":"a","op":"insert","key":"1","after":1,"tx":"t1"}
{"table":"a","op":"insert","key":"2","after":2,"tx":"t1"}
{"table":"a","op":"insert","key":"3","tx":"t2"}
`
	_, stderr, code := runFerry(t, strings.NewReader(input), "write", "--dir", dir, "--source", "shop")
	if code != 1 || !strings.Contains(stderr, "line 3") {
		t.Fatalf("exit %d, stderr %q; want 1 naming line 3", code, stderr)
	}
	out, _, _ := runFerry(t, nil, "inspect", "--json", dir)
	if got := decodeOutput(t, out); len(got) != 2 || got[1].Key != "2" {
		t.Fatalf("files hold %+v, want both changes of t1", got)
	}
}

func TestWriteKeysAndTransactions(t *testing.T) {
	dir := t.TempDir()
	input := `{"table":"a","op":"upsert","key":42,"after":{"n":1}}
{"table":"a","op":"upsert","key":-4.50,"after":[1, 2 ,3]}

{"table":"a","op":"upsert","key":"x","after":"s","tx":7}
{"table":"b","op":"update","key":"y","after":true,"before":false,"tx":7,"version":12}
{"table":"a","op":"delete","key":"z","commit_time":"2026-01-01T00:00:00Z"}
`
	_, stderr, code := runFerry(t, strings.NewReader(input), "write", "--dir", dir, "--source", "shop")
	if code != 0 || !strings.Contains(stderr, "4 transactions, 5 changes") {
		t.Fatalf("exit %d, stderr %q; want 4 transactions, 5 changes", code, stderr)
	}
	out, _, _ := runFerry(t, nil, "inspect", "--json", dir)
	got := decodeOutput(t, out)
	want := []struct{ key, after, tx string }{{"42", `{"n":1}`, ""}, {"-4.50", `[1,2,3]`, ""}, {"x", `"s"`, "7"}, {"y", `true`, "7"}, {"z", ``, ""}}
	for i, w := range want {
		if got[i].Key != w.key || string(got[i].After) != w.after || got[i].Tx != w.tx {
			t.Fatalf("change %d: key %q after %s tx %q; want %q %s %q", i, got[i].Key, got[i].After, got[i].Tx, w.key, w.after, w.tx)
		}
	}
	if got[3].Version != 12 || got[2].Version != 0 {
		t.Fatalf("versions %d and %d, want 12 on the change that gave one and none elsewhere", got[3].Version, got[2].Version)
	}
	if got[2].Position.Offset != got[3].Position.Offset || got[4].CommitTime != "2026-01-01T00:00:00Z" {
		t.Fatalf("tx 7 split over frames or commit time lost: %+v", got)
	}
}

func TestWriteUsage(t *testing.T) {
	for _, args := range [][]string{
		{"write"},
		{"write", "--dir", t.TempDir(), "--source", "a/b"},
		{"write", "--dir", t.TempDir(), "--sync", "sometimes"},
		{"write", "--dir", t.TempDir(), "--max-segment-size", "big"},
		{"write", "--dir", t.TempDir(), "extra"},
	} {
		if _, stderr, code := runFerry(t, strings.NewReader(""), args...); code != 2 || stderr == "" {
			t.Errorf("ferry %v: exit %d, stderr %q; want 2 with a message", args, code, stderr)
		}
	}
}
