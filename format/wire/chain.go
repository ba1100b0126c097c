package wire

import (
	"fmt"

	"github.com/ferrysync/ferry/format"
)

// Link is how a message continues a source's chain from a position.
type Link int

// Links.
const (
	// LinkNext: the message continues in the same segment (starting at or
	// before the position: what it repeats is skipped), or opens the next
	// segment where the previous one ended, or starts the chain.
	LinkNext Link = iota
	// LinkSkipsEmpty: the message opens a segment after segments that held
	// no frame, as its PrevSegment says.
	LinkSkipsEmpty
	// LinkSkipsHeaderOnly: the message opens the segment after next, and
	// the one between ended at its header (a writer crashed right after
	// creating it), so it produced no message.
	LinkSkipsHeaderOnly
)

// Continues reports how b continues a source shipped or applied up to pos
// (pos.Segment 0: nothing yet), or an error saying why it does not: then
// something between pos and b is missing. This is the one chain rule of the
// wire (see the package doc): receivers apply by it and the shipper checks
// the stream by it.
func (b *Batch) Continues(pos format.Position) (Link, error) {
	switch {
	case b.Segment == pos.Segment:
		if b.From > pos.Offset {
			return 0, fmt.Errorf("message starts at offset %d of segment %d, the source is at %d", b.From, b.Segment, pos.Offset)
		}
	case pos.Segment == 0:
		if b.PrevEnd != 0 {
			return 0, fmt.Errorf("nothing yet for the source and its first message (segment %d offset %d) does not start its chain (Prev-End %d, want 0)", b.Segment, b.From, b.PrevEnd)
		}
	case b.Segment < pos.Segment:
		// Wholly before pos: a repeat, skipped.
	case b.PrevEnd < 0:
		return 0, fmt.Errorf("message at offset %d of segment %d, the source is at segment %d: the first message of segment %d is missing", b.From, b.Segment, pos.Segment, b.Segment)
	case b.PrevSegment > 0:
		if b.PrevSegment != pos.Segment || b.PrevEnd != pos.Offset {
			return 0, fmt.Errorf("segment %d says segment %d ended at %d (the ones between held no frame), the source is at %d:%d", b.Segment, b.PrevSegment, b.PrevEnd, pos.Segment, pos.Offset)
		}
		return LinkSkipsEmpty, nil
	case b.Segment == pos.Segment+1:
		if b.PrevEnd != pos.Offset {
			return 0, fmt.Errorf("segment %d says segment %d ended at %d, the source is at %d", b.Segment, pos.Segment, b.PrevEnd, pos.Offset)
		}
	case b.Segment == pos.Segment+2 && format.EmptySegmentEnd(b.Source, b.PrevEnd):
		return LinkSkipsHeaderOnly, nil
	default:
		return 0, fmt.Errorf("message of segment %d, the source is at segment %d", b.Segment, pos.Segment)
	}
	return LinkNext, nil
}
