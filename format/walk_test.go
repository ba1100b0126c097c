package format_test

import (
	"errors"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// TestWalker: the frame rules every reader of frames shares (the segment
// Reader, the shipper's tail, the receiver's applier), case by case.
func TestWalker(t *testing.T) {
	tx, err := format.AppendTx(nil, &format.Tx{CommitTime: 1, Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("k"), After: []byte("{}")}}})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(b []byte) format.Frame {
		f, _, err := format.ParseFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	seal := func(next, txs, chs uint64) format.Frame {
		return frame(format.AppendSeal(nil, format.Seal{Next: next, Transactions: txs, Changes: chs, Time: 2}))
	}
	raw := func(typ format.FrameType, p string) format.Frame { return format.Frame{Type: typ, Payload: []byte(p)} }
	for _, tc := range []struct {
		name      string
		version   uint16
		fromStart bool
		sealed    bool // SetSealed before the frames
		frames    []format.Frame
		bad       int // index of the first refused frame, -1: none
	}{
		{"SealedChain", 1, true, false, []format.Frame{frame(tx), seal(8, 1, 1)}, -1},
		{"SealCountsUnchecked", 1, false, false, []format.Frame{frame(tx), seal(8, 5, 5)}, -1},
		{"SealCountsWrong", 1, true, false, []format.Frame{frame(tx), seal(8, 2, 1)}, 1},
		{"SealNamesWrongNext", 1, false, false, []format.Frame{seal(9, 0, 0)}, 0},
		{"FrameAfterSeal", 1, false, false, []format.Frame{seal(8, 0, 0), frame(tx)}, 1},
		{"FrameAfterSetSealed", 1, false, true, []format.Frame{frame(tx)}, 0},
		{"UnknownType", 1, false, false, []format.Frame{frame(tx), raw(60, "x")}, 1},
		{"OptionalType", 1, false, false, []format.Frame{raw(200, "anything"), frame(tx)}, -1},
		{"OutcomeInVersion1", 1, false, false, []format.Frame{raw(format.FrameOutcome, "xxxxxxxxxxxx")}, 0},
		{"ShortHeartbeat", 1, false, false, []format.Frame{raw(format.FrameHeartbeat, "x")}, 0},
		{"BadTxHeader", 1, false, false, []format.Frame{raw(format.FrameTx, "\xff")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := format.NewWalker(7, tc.version, tc.fromStart)
			if tc.sealed {
				w.SetSealed(format.Seal{Next: 8})
			}
			bad := -1
			for i, f := range tc.frames {
				if _, err := w.Check(f); err != nil {
					if !errors.Is(err, format.ErrCorrupt) {
						t.Fatalf("frame %d: %v, want ErrCorrupt", i, err)
					}
					bad = i
					break
				}
			}
			if got, want := bad, tc.bad; got != want {
				t.Fatalf("first refused frame %d, want %d", got, want)
			}
		})
	}
}
