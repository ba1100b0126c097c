package writeback_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/writeback"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/jackc/pgx/v5"
)

// TestApplierFileOfManyRuns hands the applier inbox files that mix kinds of
// command and write the same rows more than once: the applier carries a
// file out as set statements over runs of commands, and each command must
// still see the writes of the commands before it in the file (its version
// check, its reason), be checked on its own, and a command delivered again
// must not be carried out twice.
func TestApplierFileOfManyRuns(t *testing.T) {
	conn, ap, dir := newApplier(t, "")
	ctx := context.Background()
	cmd := func(id, op, key string, version uint64, after string) command.Command {
		c := command.Command{ID: id, Origin: "svc", Source: source, Table: table, Key: key, Op: op,
			Version: version, Submitted: time.Now().UTC(), Seq: 1}
		if after != "" {
			c.After = json.RawMessage(after)
		}
		return c
	}
	version := func(key string) uint64 {
		var v int64
		if err := conn.QueryRow(ctx, `SELECT version FROM `+table+` WHERE key = $1`, key).Scan(&v); err != nil {
			t.Fatalf("version of %s: %v", key, err)
		}
		return uint64(v)
	}
	if err := ap.Handle(ctx, []command.Command{cmd("f-1", command.OpInsert, "a", 0, `{"n":1}`),
		cmd("f-2", command.OpInsert, "b", 0, `{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	va, vb := version("a"), version("b")
	file := []command.Command{
		cmd("g-1", command.OpUpdate, "a", va, `{"n":2}`),
		cmd("g-2", command.OpUpdate, "a", va, `{"n":3}`), // read before g-1's write: stale
		cmd("g-3", command.OpInsert, "b", 0, `{"n":3}`),
		cmd("g-4", command.OpDelete, "b", vb, ""),
		cmd("g-5", command.OpUpdate, "b", vb, `{"n":5}`), // after g-4's delete
		cmd("g-6", command.OpUpsert, "c", 0, `{"n":6}`),
		cmd("g-7", command.OpUpsert, "c", 0, `{"n":7}`),
		cmd("f-1", command.OpInsert, "a", 0, `{"n":1}`),  // delivered again
		cmd("g-8", command.OpUpdate, "a", va, `{"n":8}`), // stale too, after a repeated id
	}
	if err := ap.Handle(ctx, file); err != nil {
		t.Fatal(err)
	}
	if n := ap.SavepointPasses(); n != 0 {
		t.Errorf("%d files carried out again a command at a time, want 0: the set statements failed", n)
	}
	va2 := version("a")
	recs := records(t, dir)
	for _, id := range []string{"f-1", "f-2", "g-1", "g-4", "g-6", "g-7"} {
		if r := recs[id]; r.committed != 1 || r.rejections != 0 {
			t.Errorf("%s: %+v, want carried out once", id, r)
		}
	}
	if r := recs["f-1"]; len(r.applied) != 1 {
		t.Errorf("f-1 delivered again: %+v, want its outcome written again (one applied frame)", r)
	}
	want := map[string]string{
		"g-2": fmt.Sprintf("stale version: row at %d, command read %d", va2, va),
		"g-3": fmt.Sprintf("row exists at version %d", vb),
		"g-5": "row does not exist (deleted, or never inserted)",
		"g-8": fmt.Sprintf("stale version: row at %d, command read %d", va2, va),
	}
	for id, reason := range want {
		r := recs[id]
		if r.committed != 0 || r.rejections != 1 || len(r.reasons) != 1 || r.reasons[0] != reason {
			t.Errorf("%s: %+v, want one rejection %q", id, r, reason)
		}
	}
	rows := pairs(t, conn, `SELECT key, value::text FROM `+table)
	if fmt.Sprint(rows) != `map[a:{"n": 2} c:{"n": 7}]` {
		t.Errorf("rows %v, want a at n=2 (g-1), b deleted (g-4), c at n=7 (g-7)", rows)
	}
}

// newApplier starts PostgreSQL with the applier's schema (then alter, if
// not "", run on it: a stricter legacy schema) and returns a connection,
// an applier writing change files to dir with SyncAlways, and dir.
func newApplier(t *testing.T, alter string) (*pgx.Conn, *writeback.Applier, string) {
	t.Helper()
	cluster := startPG(t)
	conn := connect(t, cluster)
	ctx := context.Background()
	if err := writeback.CreateSchema(ctx, conn, table); err != nil {
		t.Fatal(err)
	}
	if alter != "" {
		if _, err := conn.Exec(ctx, alter); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	w, err := format.OpenWriter(dir, source, format.WithSync(format.SyncAlways, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return conn, writeback.NewApplier(connect(t, cluster), w, table), dir
}

// pairs runs a query of two text columns and returns them as a map.
func pairs(t *testing.T, conn *pgx.Conn, query string) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
