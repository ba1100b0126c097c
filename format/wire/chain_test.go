package wire_test

import (
	"testing"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// TestContinues is the chain rule, case by case: what continues a source
// from a position, and what leaves something missing between them.
func TestContinues(t *testing.T) {
	empty := int64(format.HeaderLen(format.Version, "shop")) // a segment that ended at its header
	pos := func(seg uint64, off int64) format.Position { return format.Position{Segment: seg, Offset: off} }
	cases := []struct {
		name string
		b    wire.Batch
		at   format.Position
		link wire.Link
		ok   bool
	}{
		{"same segment, at the position", wire.Batch{Segment: 2, From: 100, To: 200, PrevEnd: -1}, pos(2, 100), wire.LinkNext, true},
		{"same segment, repeating part of what was shipped", wire.Batch{Segment: 2, From: 50, To: 200, PrevEnd: -1}, pos(2, 100), wire.LinkNext, true},
		{"same segment, beyond the position", wire.Batch{Segment: 2, From: 150, To: 200, PrevEnd: -1}, pos(2, 100), 0, false},
		{"chain start", wire.Batch{Segment: 1, From: 40, To: 90, PrevEnd: 0}, pos(0, 0), wire.LinkNext, true},
		{"nothing yet, mid-chain", wire.Batch{Segment: 3, From: 40, To: 90, PrevEnd: 700}, pos(0, 0), 0, false},
		{"next segment where the last ended", wire.Batch{Segment: 3, From: 40, To: 90, PrevEnd: 700}, pos(2, 700), wire.LinkNext, true},
		{"next segment, the last ended elsewhere", wire.Batch{Segment: 3, From: 40, To: 90, PrevEnd: 800}, pos(2, 700), 0, false},
		{"next segment without its first message", wire.Batch{Segment: 3, From: 400, To: 900, PrevEnd: -1}, pos(2, 700), 0, false},
		{"empty segments between, named", wire.Batch{Segment: 5, From: 40, To: 90, PrevEnd: 700, PrevSegment: 2}, pos(2, 700), wire.LinkSkipsEmpty, true},
		{"empty segments between, another end", wire.Batch{Segment: 5, From: 40, To: 90, PrevEnd: 600, PrevSegment: 2}, pos(2, 700), 0, false},
		{"a header-only segment between", wire.Batch{Source: "shop", Segment: 4, From: 40, To: 90, PrevEnd: empty}, pos(2, 700), wire.LinkSkipsHeaderOnly, true},
		{"two segments ahead, the one between not empty", wire.Batch{Source: "shop", Segment: 4, From: 40, To: 90, PrevEnd: empty + 1}, pos(2, 700), 0, false},
		{"far ahead", wire.Batch{Segment: 9, From: 40, To: 90, PrevEnd: 300}, pos(2, 700), 0, false},
		{"an earlier segment (a repeat)", wire.Batch{Segment: 1, From: 40, To: 90, PrevEnd: 0}, pos(2, 700), wire.LinkNext, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			link, err := tc.b.Continues(tc.at)
			if (err == nil) != tc.ok {
				t.Fatalf("Continues(%v) error %v, want ok %v", tc.at, err, tc.ok)
			}
			if tc.ok && link != tc.link {
				t.Fatalf("Continues(%v) = link %d, want %d", tc.at, link, tc.link)
			}
		})
	}
}
