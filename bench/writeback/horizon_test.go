package writeback_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/shipper/inbox"
)

// TestWriteBackAfterHorizon delivers commands again after the agent forgot
// them (its state's rescan point passed their outcomes, and it restarted):
// a JetStream redelivery after a long outage, or a service resubmitting
// the same id days later. The legacy finds its record of each and writes
// the same outcome again — an applied frame for the one it carried out
// (its version and transaction), the rejection again for the one it
// refused — without carrying anything out again; the agent sees those
// records and removes the inbox file; the receivers keep the first
// outcome.
func TestWriteBackAfterHorizon(t *testing.T) {
	rg := newRigWith(t, rigConfig{rescanBack: 100 * time.Millisecond}, "svc-a")
	a := rg.svcs["svc-a"]
	ctx := context.Background()
	rg.connMu.Lock()
	for _, s := range []string{
		`CREATE TABLE audit (op text NOT NULL, key text NOT NULL)`,
		`CREATE FUNCTION audit_write() RETURNS trigger AS $$ BEGIN
			INSERT INTO audit VALUES (TG_OP, COALESCE(NEW.key, OLD.key)); RETURN NEW; END $$ LANGUAGE plpgsql`,
		`CREATE TRIGGER audit_write AFTER INSERT OR UPDATE OR DELETE ON ` + table + ` FOR EACH ROW EXECUTE FUNCTION audit_write()`,
	} {
		if _, err := rg.conn.Exec(ctx, s); err != nil {
			rg.connMu.Unlock()
			t.Fatal(err)
		}
	}
	rg.connMu.Unlock()

	ins := api.CommandRequest{ID: "hz-ins", Table: table, Key: "hz1", Op: "insert", After: json.RawMessage(`{"n":1}`)}
	upd := api.CommandRequest{ID: "hz-upd", Table: table, Key: "hz-none", Op: "update", After: json.RawMessage(`{"n":2}`), Version: 7}
	for _, req := range []api.CommandRequest{ins, upd} {
		if code, out := a.submit(t, req); code != 202 {
			t.Fatalf("POST %s: %d %v", req.ID, code, out)
		}
	}
	first := map[string]api.CommandJSON{ins.ID: a.wait(t, ins.ID), upd.ID: a.wait(t, upd.ID)}
	if c := first[ins.ID]; c.State != "applied" || c.Version == 0 {
		t.Fatalf("insert: %+v, want applied with a version", c)
	}
	if c := first[upd.ID]; c.State != "rejected" || c.Reason == "" {
		t.Fatalf("update of a missing row: %+v, want rejected with a reason", c)
	}
	before := records(t, rg.changeDir)
	end := filesEnd(t, rg.changeDir)
	// Keep the agent running until its rescan point is past both
	// outcomes: a restart then no longer reads them.
	deadline := time.Now().Add(time.Minute)
	for st := rg.agent.Stats(); !after(st.RescanFrom, end) || st.Pending > 0; st = rg.agent.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the agent's rescan point %v is not past %v after a minute (stats %+v)", st.RescanFrom, end, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rg.stopAgent()
	rg.startAgent()

	// The same commands again on the stream, as a receiver publishes
	// them. Without a message id: the stream's de-duplication window is
	// long past when this happens for real.
	_, js := rg.srv.Connect(t)
	for _, req := range []api.CommandRequest{ins, upd} {
		c := command.Command{ID: req.ID, Origin: "svc-a", Source: source, Table: req.Table, Key: req.Key, Op: req.Op,
			After: req.After, Version: req.Version, Submitted: time.Now().UTC()}
		body, err := command.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, command.Subject(command.DefaultPrefix, source), body); err != nil {
			t.Fatal(err)
		}
	}
	// Delivered to the inbox again (the agent no longer knew them), and
	// the inbox emptied: the legacy's records came back.
	deadline = time.Now().Add(time.Minute)
	for {
		st := rg.agent.Stats()
		files, err := inbox.List(rg.inboxDir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Delivered == 2 && st.Pending == 0 && len(files) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the redelivered commands are not done after a minute: agent %+v, %d inbox files", st, len(files))
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := records(t, rg.changeDir)
	want := before[ins.ID]
	if g := got[ins.ID]; g.committed != 1 || g.rejections != 0 || len(g.applied) != 1 ||
		g.applied[0].Version != first[ins.ID].Version || g.applied[0].TxID != want.txID || g.applied[0].Origin != "svc-a" {
		t.Errorf("records of %s: %+v, want one committed transaction and one applied record at version %d of tx %q", ins.ID, g, first[ins.ID].Version, want.txID)
	}
	if g, b := got[upd.ID], before[upd.ID]; g.committed != 0 || g.rejections != b.rejections+1 || len(g.applied) != 0 || g.reasons[len(g.reasons)-1] != first[upd.ID].Reason {
		t.Errorf("records of %s: %+v (before %+v), want one more rejection with reason %q", upd.ID, g, b, first[upd.ID].Reason)
	}
	// Carried out once: one write of the row, one record, the row at the
	// version of that write.
	rg.connMu.Lock()
	var writes, recs int
	err := rg.conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM audit WHERE key = 'hz1'), (SELECT count(*) FROM `+
		`ferry_commands WHERE id IN ('hz-ins', 'hz-upd'))`).Scan(&writes, &recs)
	rg.connMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if writes != 1 || recs != 2 {
		t.Errorf("%d writes of row hz1 and %d command records, want 1 and 2", writes, recs)
	}
	if v := rg.version(t, "hz1"); v != first[ins.ID].Version {
		t.Errorf("row hz1 at version %d, want %d (its one write)", v, first[ins.ID].Version)
	}
	// The receiver answers the first outcome, where it was first recorded,
	// once it has read the repeats.
	deadline = time.Now().Add(time.Minute)
	for a.r.Store().DuplicateOutcomes() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("svc-a read %d repeated outcomes, want 2", a.r.Store().DuplicateOutcomes())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for id, f := range first {
		c := a.wait(t, id)
		if c.State != f.State || c.Version != f.Version || c.Segment != f.Segment || c.Offset != f.Offset || c.Reason != f.Reason {
			t.Errorf("%s after the repeat: %+v, want the first outcome %+v", id, c, f)
		}
	}
	rg.equalToDB(t)
}

// cmdRecords is what a source's change files hold for one command.
type cmdRecords struct {
	committed, rejections int
	txID                  string // of the committed transaction
	reasons               []string
	applied               []format.Applied
}

// records reads the change files: per command id its committed
// transactions (a prepared one counts once its outcome says committed),
// rejection frames and applied records.
func records(t testing.TB, dir string) map[string]cmdRecords {
	t.Helper()
	segs, err := format.ListSegments(dir, source)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]cmdRecords{}
	prepared := map[format.Position]format.Tx{}
	var tx format.Tx
	var oc format.Outcome
	committed := func(tx *format.Tx) {
		r := out[tx.Command]
		r.committed++
		r.txID = tx.ID
		out[tx.Command] = r
	}
	for _, sf := range segs {
		rd, f, err := format.OpenReader(sf.Path, 0)
		if err != nil {
			t.Fatal(err)
		}
		for {
			fr, err := rd.Next()
			if errors.Is(err, io.EOF) || errors.Is(err, format.ErrTornTail) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			switch fr.Type {
			case format.FrameTx:
				if err := format.DecodeTx(fr.Payload, &tx); err != nil {
					t.Fatal(err)
				}
				switch {
				case tx.Command == "":
				case tx.Prepared:
					prepared[format.Position{Segment: sf.Segment, Offset: rd.Offset()}] = format.Tx{ID: tx.ID, Command: tx.Command}
				default:
					committed(&tx)
				}
			case format.FrameOutcome:
				if err := format.DecodeOutcome(fr.Payload, &oc); err != nil {
					t.Fatal(err)
				}
				for _, res := range oc.Resolutions {
					if p, ok := prepared[res.Prepared]; ok && res.Decision == format.DecisionCommitted {
						committed(&p)
					}
					delete(prepared, res.Prepared)
				}
			case format.FrameRejection:
				rj, err := format.DecodeRejection(fr.Payload)
				if err != nil {
					t.Fatal(err)
				}
				r := out[rj.Command]
				r.rejections++
				r.reasons = append(r.reasons, rj.Reason)
				out[rj.Command] = r
			case format.FrameApplied:
				ap, err := format.DecodeApplied(fr.Payload)
				if err != nil {
					t.Fatal(err)
				}
				r := out[ap.Command]
				ap.Time = 0
				r.applied = append(r.applied, ap)
				out[ap.Command] = r
			}
		}
		f.Close()
	}
	return out
}

// filesEnd returns the end of the source's change files now.
func filesEnd(t testing.TB, dir string) format.Position {
	t.Helper()
	segs, err := format.ListSegments(dir, source)
	if err != nil || len(segs) == 0 {
		t.Fatalf("change files of %s: %d segments, %v", source, len(segs), err)
	}
	last := segs[len(segs)-1]
	// The data's end: the applier's writer preallocates its segments.
	end, err := format.SegmentDataSize(last.Path)
	if err != nil {
		t.Fatal(err)
	}
	return format.Position{Segment: last.Segment, Offset: end}
}

// after reports whether p is at or after q.
func after(p, q format.Position) bool {
	return p.Segment > q.Segment || p.Segment == q.Segment && p.Offset >= q.Offset
}
