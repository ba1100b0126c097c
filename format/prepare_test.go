package format_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/ferrysync/ferry/format"
)

func rowTx(table, key, after string, version uint64) *format.Tx {
	return &format.Tx{CommitTime: 1, Changes: []format.Change{
		{Table: table, Op: format.OpUpdate, Key: []byte(key), After: []byte(after), Version: version}}}
}

func prepare(t *testing.T, w *format.Writer, tx *format.Tx) *format.Prepared {
	t.Helper()
	p, err := w.Prepare(tx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// decisions returns every resolution in the chain by prepared position.
func decisions(t *testing.T, all []segmentFrames) map[format.Position]format.Decision {
	t.Helper()
	out := make(map[format.Position]format.Decision)
	for _, sf := range all {
		for _, r := range sf.outcomes {
			if _, dup := out[r.Prepared]; dup {
				t.Fatalf("%v resolved twice", r.Prepared)
			}
			out[r.Prepared] = r.Decision
		}
	}
	return out
}

func TestPrepareCommitAbort(t *testing.T) {
	for _, policy := range []format.SyncPolicy{format.SyncNone, format.SyncInterval, format.SyncAlways} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			w := openWriter(t, dir, format.WithSync(policy, 0))
			a := prepare(t, w, rowTx("stock", "sku-1", `{"qty":9}`, 10))
			b := prepare(t, w, rowTx("stock", "sku-2", `{"qty":4}`, 0))
			c := commit(t, w, rowTx("stock", "sku-3", `{"qty":1}`, 0))
			if err := a.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := b.Abort(); err != nil {
				t.Fatal(err)
			}
			if err := a.Abort(); !errors.Is(err, format.ErrResolved) {
				t.Fatalf("second outcome of the same transaction: %v, want ErrResolved", err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			txs, pos, all := checkChain(t, dir)
			if len(txs) != 3 || pos[0] != a.Position() || pos[1] != b.Position() || pos[2] != c {
				t.Fatalf("frames at %v, want %v %v %v", pos, a.Position(), b.Position(), c)
			}
			if !txs[0].Prepared || !txs[1].Prepared || txs[2].Prepared {
				t.Fatalf("prepared flags %v %v %v, want true true false", txs[0].Prepared, txs[1].Prepared, txs[2].Prepared)
			}
			if got := txs[0].Changes[0].Version; got != 10 {
				t.Fatalf("row version %d, want 10", got)
			}
			got := decisions(t, all)
			want := map[format.Position]format.Decision{a.Position(): format.DecisionCommitted, b.Position(): format.DecisionAborted}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("outcomes %v, want %v", got, want)
			}
		})
	}
}

// TestPrepareKeepsRowOrder is the order contract in miniature: workers
// update hot rows under a row lock (the database's), prepare their frame
// while holding it and record the outcome after releasing it. Whatever the
// interleaving, each row's committed frames appear in the files in the
// order the row was updated.
func TestPrepareKeepsRowOrder(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncAlways, 0), format.WithMaxSegmentSize(64<<10))
	const rows, workers, perWorker = 5, 8, 300
	var locks [rows]sync.Mutex
	var versions [rows]uint64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < perWorker; j++ {
				r := (i + j) % rows
				locks[r].Lock()
				versions[r]++
				v := versions[r]
				p, err := w.Prepare(rowTx("stock", strconv.Itoa(r), strconv.FormatUint(v, 10), 0))
				abort := j%17 == 0 // the database rolled this one back
				if abort {
					versions[r]--
				}
				locks[r].Unlock() // COMMIT: the row lock goes
				if err != nil {
					errs <- err
					return
				}
				if abort {
					err = p.Abort()
				} else {
					err = p.Commit()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	txs, pos, all := checkChain(t, dir)
	dec := decisions(t, all)
	var last [rows]uint64
	committed := 0
	for i, tx := range txs {
		d := dec[pos[i]]
		if d == format.DecisionUnknown {
			t.Fatalf("transaction at %v has no outcome", pos[i])
		}
		if d != format.DecisionCommitted {
			continue
		}
		committed++
		r, _ := strconv.Atoi(string(tx.Changes[0].Key))
		v, _ := strconv.ParseUint(string(tx.Changes[0].After), 10, 64)
		if v != last[r]+1 {
			t.Fatalf("row %d: committed value %d at %v follows %d: out of commit order", r, v, pos[i], last[r])
		}
		last[r] = v
	}
	for r := range last {
		if last[r] != versions[r] {
			t.Fatalf("row %d ends at %d in the files, %d in the 'database'", r, last[r], versions[r])
		}
	}
	if len(all) < 2 {
		t.Fatalf("the test wants prepared transactions across rotations; %d segments", len(all))
	}
	t.Logf("%d transactions, %d committed, %d segments", len(txs), committed, len(all))
}

// crashImage copies what a killed writer left on disk (every byte it wrote
// reached the OS) into a new directory, as kill -9 would leave it.
func crashImage(t *testing.T, dir string) string {
	t.Helper()
	img := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func inDoubtPositions(w *format.Writer) []format.Position {
	var out []format.Position
	for _, d := range w.InDoubt() {
		out = append(out, d.Position)
	}
	return out
}

func TestInDoubtAfterCrash(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithMaxSegmentSize(4096), format.WithHeartbeat(0))
	defer w.Close()
	a := prepare(t, w, &format.Tx{ID: "xid-a", Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("a"), After: []byte(`{}`)}}})
	b := prepare(t, w, &format.Tx{ID: "xid-b", Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("b"), After: []byte(`{}`)}}})
	// Rotations between the prepared frames and the crash: the low
	// watermark carries them forward.
	for i := 0; i < 200; i++ {
		commit(t, w, rowTx("t", "filler", fmt.Sprintf(`{"i":%d}`, i), 0))
	}
	if w.Segment() < 3 {
		t.Fatalf("want several rotations, at segment %d", w.Segment())
	}
	c := prepare(t, w, &format.Tx{ID: "xid-c", Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("c"), After: []byte(`{}`)}}})
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil { // a's outcome reaches the file
		t.Fatal(err)
	}

	// Killed now: b and c are in doubt, a is not.
	img := crashImage(t, dir)
	w2 := openWriter(t, img, format.WithHeartbeat(0))
	if got, want := fmt.Sprint(inDoubtPositions(w2)), fmt.Sprint([]format.Position{b.Position(), c.Position()}); got != want {
		t.Fatalf("in doubt %s, want %s", got, want)
	}
	if got := w2.InDoubt()[0].Tx.ID; got != "xid-b" {
		t.Fatalf("in-doubt transaction id %q, want xid-b (what a resolver asks the database about)", got)
	}
	if err := w2.Resolve(b.Position(), format.DecisionAborted); err != nil {
		t.Fatal(err)
	}
	if err := w2.Resolve(b.Position(), format.DecisionAborted); !errors.Is(err, format.ErrResolved) {
		t.Fatalf("resolving twice: %v", err)
	}
	// Killed again before c is resolved, after b's outcome was written.
	if err := w2.Sync(); err != nil {
		t.Fatal(err)
	}
	img2 := crashImage(t, img)
	w2.Close()

	// The third writer still finds c, through two low watermarks, and
	// resolves it with the database's answer.
	asked := map[string]bool{}
	w3 := openWriter(t, img2, format.WithHeartbeat(0), format.WithResolver(func(_ context.Context, pos format.Position, tx *format.Tx) (format.Decision, error) {
		asked[tx.ID] = true
		return format.DecisionCommitted, nil
	}))
	if len(w3.InDoubt()) != 0 || len(asked) != 1 || !asked["xid-c"] {
		t.Fatalf("resolver asked about %v, in doubt after open %v; want only xid-c, none left", asked, inDoubtPositions(w3))
	}
	if err := w3.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, all := checkChainAny(t, img2)
	dec := decisions(t, all)
	want := map[format.Position]format.Decision{a.Position(): format.DecisionCommitted, b.Position(): format.DecisionAborted, c.Position(): format.DecisionCommitted}
	if fmt.Sprint(dec) != fmt.Sprint(want) {
		t.Fatalf("outcomes in the files %v, want %v", dec, want)
	}
	// A fourth writer finds nothing in doubt.
	w4 := openWriter(t, img2)
	defer w4.Close()
	if got := w4.InDoubt(); len(got) != 0 {
		t.Fatalf("in doubt after every outcome was written: %v", got)
	}
}

// checkChainAny reads a chain that may hold abandoned (unsealed) segments,
// as crash images do.
func checkChainAny(t *testing.T, dir string) ([]format.Tx, []format.Position, []segmentFrames) {
	t.Helper()
	segs, err := format.ListSegments(dir, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var txs []format.Tx
	var pos []format.Position
	var all []segmentFrames
	for _, s := range segs {
		sf := readSegment(t, s.Path)
		if sf.endErr != io.EOF {
			t.Fatalf("%s: %v", s.Path, sf.endErr)
		}
		for j := range sf.txs {
			txs = append(txs, sf.txs[j])
			pos = append(pos, format.Position{Segment: s.Segment, Offset: sf.offs[j]})
		}
		all = append(all, sf)
	}
	return txs, pos, all
}

func TestCommitRefusesPreparedTx(t *testing.T) {
	w := openWriter(t, t.TempDir())
	defer w.Close()
	tx := rowTx("t", "k", `{}`, 0)
	tx.Prepared = true
	if _, err := w.Commit(tx); !errors.Is(err, format.ErrInvalid) {
		t.Fatalf("Commit of a prepared tx: %v, want ErrInvalid", err)
	}
	if err := w.Resolve(format.Position{Segment: 1, Offset: 99}, format.DecisionUnknown); !errors.Is(err, format.ErrInvalid) {
		t.Fatalf("Resolve with DecisionUnknown: %v, want ErrInvalid", err)
	}
}

func TestRejectAndCommandRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncAlways, 0))
	p := prepare(t, w, &format.Tx{Origin: "svc-orders", Command: "cmd-1", Changes: []format.Change{
		{Table: "orders", Op: format.OpInsert, Key: []byte("o-1"), After: []byte(`{}`), Version: 1}}})
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	rpos, err := w.Reject(format.Rejection{Command: "cmd-2", Origin: "svc-orders", Reason: "stale version"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Reject(format.Rejection{Origin: "svc-orders"}); !errors.Is(err, format.ErrInvalid) {
		t.Fatalf("rejection without a command id: %v, want ErrInvalid", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	txs, _, all := checkChain(t, dir)
	if len(txs) != 1 || txs[0].Command != "cmd-1" || txs[0].Origin != "svc-orders" {
		t.Fatalf("transactions %+v, want one carrying command cmd-1", txs)
	}
	// The rejection is a frame of its own at rpos, counted in no seal count
	// (checkChain checked the counts).
	rd, f, err := format.OpenReader(all[0].path, rpos.Offset)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fr, err := rd.Next()
	if err != nil || fr.Type != format.FrameRejection {
		t.Fatalf("frame at %v: %v %v, want a rejection", rpos, fr.Type, err)
	}
	r, err := format.DecodeRejection(fr.Payload)
	if err != nil || r.Command != "cmd-2" || r.Reason != "stale version" {
		t.Fatalf("rejection %+v, %v", r, err)
	}
}

func TestAppliedRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncAlways, 0))
	want := format.Applied{Time: 1234, Command: "cmd-1", Origin: "svc-orders", TxID: "pg:778", Version: 300}
	apos, err := w.RecordApplied(want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.RecordApplied(format.Applied{Origin: "svc-orders"}); !errors.Is(err, format.ErrInvalid) {
		t.Fatalf("applied record without a command id: %v, want ErrInvalid", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Not a transaction: checkChain checked the seal counts it is not in.
	txs, _, all := checkChain(t, dir)
	if len(txs) != 0 {
		t.Fatalf("transactions %+v, want none", txs)
	}
	rd, f, err := format.OpenReader(all[0].path, apos.Offset)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fr, err := rd.Next()
	if err != nil || fr.Type != format.FrameApplied || !fr.Type.Skippable() {
		t.Fatalf("frame at %v: %v %v, want an applied frame (optional)", apos, fr.Type, err)
	}
	got, err := format.DecodeApplied(fr.Payload)
	if err != nil || got != want {
		t.Fatalf("applied %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range [][]byte{append(slices.Clone(fr.Payload), 0), fr.Payload[:len(fr.Payload)-1]} {
		if _, err := format.DecodeApplied(bad); !errors.Is(err, format.ErrCorrupt) {
			t.Errorf("DecodeApplied of %d bytes: %v, want ErrCorrupt", len(bad), err)
		}
	}
}

// TestPrepareBatch: the frames of one batch are appended in order, each a
// prepared transaction of its own resolved on its own; a batch with an
// invalid transaction fails whole, its valid frames recorded as aborted so
// that no reader ever applies them.
func TestPrepareBatch(t *testing.T) {
	for _, policy := range []format.SyncPolicy{format.SyncNone, format.SyncAlways} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			w := openWriter(t, dir, format.WithSync(policy, 0))
			ps, err := w.PrepareBatch([]*format.Tx{
				rowTx("stock", "sku-1", `{"qty":1}`, 1),
				rowTx("stock", "sku-2", `{"qty":2}`, 2),
				rowTx("stock", "sku-1", `{"qty":3}`, 3),
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 3 || !ps[0].Position().Less(ps[1].Position()) || !ps[1].Position().Less(ps[2].Position()) {
				t.Fatalf("%d prepared, want 3 in append order", len(ps))
			}
			bad := rowTx("", "sku-9", `{"qty":9}`, 9) // no table: refused
			lost, err := w.PrepareBatch([]*format.Tx{rowTx("stock", "sku-4", `{"qty":4}`, 4), bad})
			if !errors.Is(err, format.ErrInvalid) || lost != nil {
				t.Fatalf("batch with an invalid transaction: %v, %v; want ErrInvalid and nothing", lost, err)
			}
			for _, p := range []*format.Prepared{ps[0], ps[2]} {
				if err := p.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			if err := ps[1].Abort(); err != nil {
				t.Fatal(err)
			}
			if empty, err := w.PrepareBatch(nil); err != nil || len(empty) != 0 {
				t.Fatalf("empty batch: %v, %v", empty, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			txs, pos, all := checkChain(t, dir)
			if len(txs) != 4 {
				t.Fatalf("%d frames, want 4 (3 + the failed batch's valid one)", len(txs))
			}
			for i, want := range []string{"sku-1", "sku-2", "sku-1", "sku-4"} {
				if got := string(txs[i].Changes[0].Key); got != want || !txs[i].Prepared {
					t.Fatalf("frame %d: key %s prepared %v, want %s prepared", i, got, txs[i].Prepared, want)
				}
			}
			got := decisions(t, all)
			want := map[format.Position]format.Decision{ps[0].Position(): format.DecisionCommitted,
				ps[1].Position(): format.DecisionAborted, ps[2].Position(): format.DecisionCommitted, pos[3]: format.DecisionAborted}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("outcomes %v, want %v", got, want)
			}
		})
	}
}
