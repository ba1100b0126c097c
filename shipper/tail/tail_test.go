package tail_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/shipper/tail"
)

// writeChain writes segments 1..len(txs) of source "s", segment i holding
// txs[i] transactions of changes changes each; all but the last are sealed.
func writeChain(t *testing.T, dir string, txs []int, changes int) []int64 {
	t.Helper()
	var ends []int64
	for i, n := range txs {
		seg := uint64(i + 1)
		b, err := format.AppendHeader(nil, format.SegmentHeader{Source: "s", Segment: seg, Created: 1})
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < n; k++ {
			tx := &format.Tx{CommitTime: int64(1000 + k)}
			for c := 0; c < changes; c++ {
				tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpInsert, Key: []byte(fmt.Sprint(k, c)), After: []byte(`{"a":1}`)})
			}
			if b, err = format.AppendTx(b, tx); err != nil {
				t.Fatal(err)
			}
		}
		if i < len(txs)-1 {
			b = format.AppendSeal(b, format.Seal{Next: seg + 1, Transactions: uint64(n), Changes: uint64(n * changes), Time: 5000})
		}
		if err := os.WriteFile(filepath.Join(dir, format.SegmentName("s", seg)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, int64(len(b)))
	}
	return ends
}

// drain reads every span there is now.
func drain(t *testing.T, fl *tail.Follower) []tail.Span {
	t.Helper()
	var out []tail.Span
	for {
		s, err := fl.Fill()
		if err != nil {
			t.Fatalf("Fill: %v", err)
		}
		if s.Len() == 0 {
			return out
		}
		s.Raw = append([]byte(nil), s.Raw...)
		out = append(out, s)
		fl.Consume(s)
	}
}

func TestSpansFollowChainWithinLimits(t *testing.T) {
	cases := []struct {
		name       string
		maxBytes   int
		maxChanges int
	}{
		{"Bytes", 2048, 0},
		{"Changes", 1 << 20, 7},
		{"Both", 4096, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ends := writeChain(t, dir, []int{100, 50, 10}, 3)
			fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{MaxBytes: tc.maxBytes, MaxChanges: tc.maxChanges, ListEvery: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			spans := drain(t, fl)
			var seg uint64
			var pos int64
			changes := 0
			for i, s := range spans {
				if s.Segment != seg {
					wantPrev := int64(0)
					if seg != 0 {
						wantPrev = ends[seg-1]
					}
					if s.PrevEnd != wantPrev || s.Segment != seg+1 {
						t.Fatalf("span %d: segment %d PrevEnd %d, want segment %d PrevEnd %d", i, s.Segment, s.PrevEnd, seg+1, wantPrev)
					}
					seg, pos = s.Segment, s.From
				} else if s.PrevEnd != -1 || s.From != pos {
					t.Fatalf("span %d: From %d PrevEnd %d, want From %d and no PrevEnd", i, s.From, s.PrevEnd, pos)
				}
				if tc.maxBytes > 0 && s.Len() > int64(tc.maxBytes) {
					t.Errorf("span %d: %d bytes over %d", i, s.Len(), tc.maxBytes)
				}
				if tc.maxChanges > 0 && s.Changes > tc.maxChanges {
					t.Errorf("span %d: %d changes over %d", i, s.Changes, tc.maxChanges)
				}
				if int64(len(s.Raw)) != s.Len() {
					t.Fatalf("span %d: %d raw bytes for %d", i, len(s.Raw), s.Len())
				}
				changes += s.Changes
				pos = s.To
			}
			if got, want := fl.Pos(), (format.Position{Segment: 3, Offset: ends[2]}); got != want {
				t.Errorf("Pos = %v, want %v", got, want)
			}
			if changes != 160*3 {
				t.Errorf("%d changes, want %d", changes, 160*3)
			}
		})
	}
}

func TestFollowsAppendsAndRotation(t *testing.T) {
	dir := t.TempDir()
	ends := writeChain(t, dir, []int{5}, 1)
	fl, err := tail.Open(dir, "s", format.Position{Segment: 1}, tail.Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if got := drain(t, fl); len(got) != 1 || got[0].To != ends[0] {
		t.Fatalf("spans %+v", got)
	}
	// Nothing new: empty, no error.
	if s, err := fl.Fill(); err != nil || s.Len() != 0 {
		t.Fatalf("Fill = %+v, %v at the end of a live segment", s, err)
	}
	// The writer appends a frame and a seal, and creates segment 2.
	f, _ := os.OpenFile(filepath.Join(dir, format.SegmentName("s", 1)), os.O_WRONLY|os.O_APPEND, 0)
	more, _ := format.AppendTx(nil, &format.Tx{CommitTime: 9, Changes: []format.Change{{Table: "t", Op: format.OpDelete, Key: []byte("k")}}})
	more = format.AppendSeal(more, format.Seal{Next: 2, Transactions: 6, Changes: 6})
	f.Write(more)
	f.Close()
	got := drain(t, fl)
	if len(got) != 1 || !got[0].Sealed || got[0].Frames != 2 || got[0].To != ends[0]+int64(len(more)) {
		t.Fatalf("after append: %+v", got)
	}
	h, _ := format.AppendHeader(nil, format.SegmentHeader{Source: "s", Segment: 2})
	h, _ = format.AppendTx(h, &format.Tx{CommitTime: 10, Changes: []format.Change{{Table: "t", Op: format.OpDelete, Key: []byte("k")}}})
	os.WriteFile(filepath.Join(dir, format.SegmentName("s", 2)), h, 0o644)
	got = drain(t, fl)
	if len(got) != 1 || got[0].Segment != 2 || got[0].PrevEnd != ends[0]+int64(len(more)) || got[0].Torn != 0 {
		t.Fatalf("after rotation: %+v", got)
	}
}

func TestOpenMissingSegment(t *testing.T) {
	_, err := tail.Open(t.TempDir(), "s", format.Position{Segment: 4, Offset: 100}, tail.Options{})
	if !errors.Is(err, tail.ErrMissing) {
		t.Fatalf("Open = %v, want ErrMissing", err)
	}
}
