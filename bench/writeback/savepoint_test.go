package writeback_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/writeback"
	"github.com/ferrysync/ferry/format/command"
)

// TestApplierRefusesWhatTheDatabaseRefuses hands the applier one inbox
// file whose middle command the database refuses (its key is too long for
// the column): that command is rejected with the database's error as the
// reason, the others of the file are carried out, and the file is done
// (Handle returns nil) instead of being retried for ever. A redelivery of
// the file writes the same outcomes again and carries out nothing.
func TestApplierRefusesWhatTheDatabaseRefuses(t *testing.T) {
	// The legacy's schema is stricter than the applier's generic one.
	conn, ap, dir := newApplier(t, `ALTER TABLE `+table+` ALTER COLUMN key TYPE varchar(16)`)
	ctx := context.Background()
	cmd := func(id, key string) command.Command {
		return command.Command{ID: id, Origin: "svc", Source: source, Table: table, Key: key, Op: command.OpInsert,
			After: json.RawMessage(`{"id":"` + id + `"}`), Submitted: time.Now().UTC(), Seq: 1}
	}
	cmds := []command.Command{cmd("sp-1", "short-1"), cmd("sp-2", strings.Repeat("x", 40)), cmd("sp-3", "short-3")}
	for round := range 2 {
		if err := ap.Handle(ctx, cmds); err != nil {
			t.Fatalf("round %d: Handle: %v", round, err)
		}
	}
	// The second delivery finds every id recorded and writes nothing:
	// nothing for the database to refuse.
	if n := ap.SavepointPasses(); n != 1 {
		t.Errorf("%d savepoint passes, want 1 (the first delivery)", n)
	}
	recs := records(t, dir)
	for _, id := range []string{"sp-1", "sp-3"} {
		if r := recs[id]; r.committed != 1 || r.rejections != 0 || len(r.applied) != 1 {
			t.Errorf("%s: %+v, want carried out once (and its outcome written again at the second delivery)", id, r)
		}
	}
	r := recs["sp-2"]
	if r.committed != 0 || r.rejections != 2 || len(r.applied) != 0 {
		t.Fatalf("sp-2: %+v, want two rejections (one per delivery)", r)
	}
	for _, reason := range r.reasons {
		if !strings.Contains(reason, "sp-2") || !strings.Contains(reason, "value too long") || !strings.Contains(reason, "22001") {
			t.Errorf("sp-2 rejected with %q, want the command id and the database's error", reason)
		}
	}
	if r.reasons[0] != r.reasons[1] {
		t.Errorf("the second delivery's reason %q differs from the first's %q", r.reasons[1], r.reasons[0])
	}
	rows := pairs(t, conn, `SELECT key, value->>'id' FROM `+table)
	if len(rows) != 2 || rows["short-1"] != "sp-1" || rows["short-3"] != "sp-3" {
		t.Errorf("rows %v, want short-1 and short-3 only", rows)
	}
	outcomes := pairs(t, conn, `SELECT id, outcome FROM `+writeback.CommandsTable)
	if len(outcomes) != 3 || outcomes["sp-1"] != "applied" || outcomes["sp-2"] != "rejected" || outcomes["sp-3"] != "applied" {
		t.Errorf("the legacy's command records %v, want sp-1 and sp-3 applied, sp-2 rejected", outcomes)
	}
}
