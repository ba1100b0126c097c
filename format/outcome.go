package format

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Decision is the outcome of a prepared transaction.
type Decision uint8

// Decisions. DecisionUnknown is never written: it is what a Resolver
// answers when the database cannot tell yet, leaving the transaction in
// doubt.
const (
	DecisionUnknown   Decision = 0
	DecisionCommitted Decision = 1
	DecisionAborted   Decision = 2
)

func (d Decision) String() string {
	switch d {
	case DecisionUnknown:
		return "unknown"
	case DecisionCommitted:
		return "committed"
	case DecisionAborted:
		return "aborted"
	}
	return fmt.Sprintf("decision(%d)", uint8(d))
}

// Resolution names one prepared transaction, by the position of its frame in
// the source's chain, and its decision.
type Resolution struct {
	Prepared Position
	Decision Decision
}

// Outcome is the payload of an outcome frame: the decisions on prepared
// transactions of the same source, all in earlier frames (SPEC.md, "Outcome
// frame").
type Outcome struct {
	// Time is when the outcomes were recorded, in Unix nanoseconds.
	Time        int64
	Resolutions []Resolution
}

// Outcome payload layout (SPEC.md, "Outcome frame"):
//
//	| time i64 | count uvarint (>= 1) |
//	| count x ( segment uvarint | offset uvarint | decision u8 ) |
const (
	// minResolutionLen is the smallest encoded resolution: two one-byte
	// varints and the decision.
	minResolutionLen = 3
	// minOutcomeLen is the smallest outcome payload: time, count, one
	// resolution.
	minOutcomeLen = 8 + 1 + minResolutionLen
)

// AppendOutcome validates o and appends it to dst as one outcome frame.
func AppendOutcome(dst []byte, o Outcome) ([]byte, error) {
	if len(o.Resolutions) == 0 {
		return dst, fmt.Errorf("%w: outcome frame without resolutions", ErrInvalid)
	}
	for i, r := range o.Resolutions {
		if err := validResolution(r); err != nil {
			return dst, fmt.Errorf("%w: resolution %d: %v", ErrInvalid, i, err)
		}
	}
	if n := OutcomePayloadLen(o); n > MaxFrameLen {
		return dst, fmt.Errorf("%w: outcome of %d bytes (max %d)", ErrTooLarge, n, MaxFrameLen)
	}
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(o.Time))
	dst = binary.AppendUvarint(dst, uint64(len(o.Resolutions)))
	for _, r := range o.Resolutions {
		dst = binary.AppendUvarint(dst, r.Prepared.Segment)
		dst = binary.AppendUvarint(dst, uint64(r.Prepared.Offset))
		dst = append(dst, byte(r.Decision))
	}
	finishFrame(dst[start:], FrameOutcome)
	return dst, nil
}

// OutcomePayloadLen returns the size of o's encoded payload.
func OutcomePayloadLen(o Outcome) int {
	n := 8 + uvarintLen(len(o.Resolutions))
	for _, r := range o.Resolutions {
		n += uvarintLen64(r.Prepared.Segment) + uvarintLen64(uint64(r.Prepared.Offset)) + 1
	}
	return n
}

func validResolution(r Resolution) error {
	switch {
	case r.Decision != DecisionCommitted && r.Decision != DecisionAborted:
		return fmt.Errorf("decision %v (want committed or aborted)", r.Decision)
	case r.Prepared.Segment == 0:
		return fmt.Errorf("prepared position %v: segment 0", r.Prepared)
	case r.Prepared.Offset < MinHeaderLen:
		return fmt.Errorf("prepared position %v: offset inside the segment header", r.Prepared)
	}
	return nil
}

// DecodeOutcome decodes an outcome frame's payload into o, reusing
// o.Resolutions. It never trusts payload: the count is bounded by what the
// payload can hold before anything is allocated.
func DecodeOutcome(payload []byte, o *Outcome) error {
	d := decoder{b: payload}
	o.Time = int64(d.u64())
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	if n == 0 {
		return d.fail("outcome without resolutions")
	}
	if n > uint64(len(d.b)-d.off)/minResolutionLen {
		return d.fail("resolution count %d larger than the payload can hold", n)
	}
	if cap(o.Resolutions) < int(n) {
		o.Resolutions = make([]Resolution, n)
	}
	o.Resolutions = o.Resolutions[:n]
	for i := range o.Resolutions {
		seg, off := d.uvarint(), d.uvarint()
		dec := Decision(d.byte())
		if d.err != nil {
			return d.err
		}
		if off > math.MaxInt64 {
			return d.fail("resolution %d: offset %d over 2^63-1", i, off)
		}
		r := Resolution{Prepared: Position{Segment: seg, Offset: int64(off)}, Decision: dec}
		if err := validResolution(r); err != nil {
			return d.fail("resolution %d: %v", i, err)
		}
		o.Resolutions[i] = r
	}
	if d.off != len(d.b) {
		return d.fail("%d trailing bytes after the last resolution", len(d.b)-d.off)
	}
	return nil
}
