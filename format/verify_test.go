package format_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// writeChain commits n one-change transactions for source shop into a new
// directory, rotating segments at maxSeg bytes (0: never), and closes.
func writeChain(t *testing.T, n int, maxSeg int64) string {
	t.Helper()
	dir := t.TempDir()
	opts := []format.WriterOption{format.WithSync(format.SyncNone, 0)}
	if maxSeg > 0 {
		opts = append(opts, format.WithMaxSegmentSize(maxSeg))
	}
	w, err := format.OpenWriter(dir, "shop", opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		tx := format.Tx{CommitTime: int64(i + 1), Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte{byte(i)}, After: []byte(`{"pad":"` + strings.Repeat("p", 100) + `"}`)}}}
		if _, err := w.Commit(&tx); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func segFile(dir string, seg uint64) string {
	return filepath.Join(dir, format.SegmentName("shop", seg))
}

// TestVerifier: the verdicts of format.Verifier (what ferry inspect --verify
// prints) on a clean chain and on each kind of damage.
func TestVerifier(t *testing.T) {
	for _, tc := range []struct {
		name           string
		damage         func(t *testing.T, dir string)
		corrupt, torn  int
		abandoned      int
		chainErr       bool // the first problem is ErrBrokenChain
		txs            int
		wantFirstMatch string
	}{
		{name: "Clean", damage: func(*testing.T, string) {}, txs: 120},
		{name: "Gap", damage: func(t *testing.T, dir string) { must(t, os.Remove(segFile(dir, 3))) }, corrupt: 1, chainErr: true,
			wantFirstMatch: "segment 2 is followed by segment 4", txs: -1},
		{name: "HeaderDoesNotMatchName", damage: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(segFile(dir, 2))
			must(t, os.WriteFile(segFile(dir, 1), b, 0o644))
		},
			corrupt: 1, chainErr: true, wantFirstMatch: "does not match the file name", txs: -1},
		{name: "TornTail", damage: func(t *testing.T, dir string) {
			last := lastSeg(t, dir)
			b, _ := os.ReadFile(last)
			must(t, os.WriteFile(last, b[:len(b)-format.FrameHeaderLen-40], 0o644)) // the seal and part of the last frame
		}, torn: 1, wantFirstMatch: "torn tail", txs: -1},
		{name: "FlippedByte", damage: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(segFile(dir, 1))
			b[len(b)/2] ^= 0xff
			must(t, os.WriteFile(segFile(dir, 1), b, 0o644))
		}, corrupt: 1, txs: -1},
		{name: "Abandoned", damage: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(segFile(dir, 1))
			// Cut the seal only: the writer stopped without closing.
			must(t, os.WriteFile(segFile(dir, 1), b[:len(b)-format.FrameHeaderLen-32], 0o644))
		}, abandoned: 1, txs: 120},
		{name: "AbandonedPreallocated", damage: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(segFile(dir, 1))
			// A preallocating writer stopped without closing: its
			// unwritten space is zeros, neither torn nor corrupt.
			b = append(b[:len(b)-format.FrameHeaderLen-32], make([]byte, 64<<10)...)
			must(t, os.WriteFile(segFile(dir, 1), b, 0o644))
		}, abandoned: 1, txs: 120},
		{name: "TornThenPreallocated", damage: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(segFile(dir, 1))
			b = append(b[:len(b)-format.FrameHeaderLen-40], make([]byte, 64<<10)...)
			must(t, os.WriteFile(segFile(dir, 1), b, 0o644))
		}, torn: 1, wantFirstMatch: "torn tail", txs: -1},
		{name: "ZerosThenFrames", damage: func(t *testing.T, dir string) {
			// Zeros in the middle, valid frames after them: not space a
			// writer left unwritten, but damage.
			b, _ := os.ReadFile(segFile(dir, 1))
			h, _ := format.ParseHeader(b)
			clear(b[h.Len : h.Len+600])
			must(t, os.WriteFile(segFile(dir, 1), b, 0o644))
		}, corrupt: 1, txs: -1},
		{name: "IncompleteHeader", damage: func(t *testing.T, dir string) {
			last := lastSeg(t, dir)
			b, _ := os.ReadFile(last)
			must(t, os.WriteFile(last, b[:10], 0o644))
		}, torn: 1, wantFirstMatch: "header is incomplete", txs: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeChain(t, 120, 4096)
			tc.damage(t, dir)
			var results []format.SegmentResult
			v := format.Verifier{Chain: true, Done: func(r *format.SegmentResult) error { results = append(results, *r); return nil }}
			if err := v.Verify([]string{dir}); err != nil {
				t.Fatal(err)
			}
			if v.Corrupt != tc.corrupt || v.Torn != tc.torn {
				t.Fatalf("corrupt %d torn %d, want %d and %d (first: %v)", v.Corrupt, v.Torn, tc.corrupt, tc.torn, v.First)
			}
			if got, want := errors.Is(v.First, format.ErrBrokenChain), tc.chainErr; got != want {
				t.Fatalf("first problem %v: ErrBrokenChain %v, want %v", v.First, got, want)
			}
			if tc.wantFirstMatch != "" && !strings.Contains(v.First.Error(), tc.wantFirstMatch) {
				t.Fatalf("first problem %q, want it to say %q", v.First, tc.wantFirstMatch)
			}
			if tc.txs >= 0 && v.Transactions != tc.txs {
				t.Fatalf("%d transactions, want %d", v.Transactions, tc.txs)
			}
			abandoned := 0
			for _, r := range results {
				if r.Abandoned {
					abandoned++
				}
			}
			if len(results) != v.Segments || abandoned != tc.abandoned {
				t.Fatalf("%d results for %d segments, %d abandoned; want %d abandoned", len(results), v.Segments, abandoned, tc.abandoned)
			}
		})
	}
}

// TestVerifierFrames: the Frame hook sees every valid frame in order with
// its transaction decoded, and the segments' results agree with it.
func TestVerifierFrames(t *testing.T) {
	dir := writeChain(t, 60, 4096)
	var keys []byte
	var seals int
	v := format.Verifier{Frame: func(r *format.SegmentResult, f *format.VerifiedFrame) error {
		switch {
		case f.Tx != nil:
			keys = append(keys, f.Tx.Changes[0].Key...)
		case f.Frame.Type == format.FrameSeal:
			seals++
		}
		return nil
	}}
	if err := v.Verify([]string{dir}); err != nil {
		t.Fatal(err)
	}
	if got, want := len(keys), 60; got != want {
		t.Fatalf("%d transactions seen, want %d", got, want)
	}
	for i, k := range keys {
		if int(k) != i {
			t.Fatalf("transaction %d has key %d: out of order", i, k)
		}
	}
	if got, want := seals, v.Segments; got != want {
		t.Fatalf("%d seals, want one per segment (%d)", got, want)
	}
}

func lastSeg(t *testing.T, dir string) string {
	segs, err := format.ListSegments(dir, "shop")
	if err != nil || len(segs) == 0 {
		t.Fatalf("ListSegments: %v, %d segments", err, len(segs))
	}
	return segs[len(segs)-1].Path
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
