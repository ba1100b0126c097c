package consume

import (
	"errors"
	"fmt"
)

// Error kinds, also the "kind" label of the errors metric.
const (
	KindGap     = "gap"     // a message starts after the applied position: data missing
	KindCorrupt = "corrupt" // a body or frame that does not check out
	KindHeader  = "header"  // message headers that do not parse
	KindLimit   = "limit"   // a transaction beyond what the receiver is configured to hold
)

// ErrGap and ErrCorrupt classify a SourceError (errors.Is).
var (
	ErrGap     = errors.New("consume: gap in the stream")
	ErrCorrupt = errors.New("consume: corrupt message")
	ErrLimit   = errors.New("consume: transaction over the receiver's limit")
)

// SourceError stops one source: nothing of it is applied past Segment:Offset
// until a message continuing exactly from there arrives (the shipper
// re-shipping the range). Other sources keep flowing.
type SourceError struct {
	Source  string
	Kind    string
	Segment uint64
	// Offset is where the problem is: the frame that failed its check, or
	// the start of the message that left a gap.
	Offset int64
	// Applied is the source's applied position when it stopped.
	AppliedSegment uint64
	AppliedOffset  int64
	StreamSeq      uint64
	Err            error
}

func (e *SourceError) Error() string {
	hint := "the shipper must re-ship this range (it re-ships from the stream's tail on restart); if the data is gone, rebuild this receiver from a checkpoint or with --rebuild"
	switch e.Kind {
	case KindCorrupt, KindHeader:
		hint = "check the shipper's host and the broker for corruption; the shipper re-ships from its change files on restart"
	case KindLimit:
		hint = "if the transaction is genuine, restart the receiver with a higher --max-tx-mb (it re-reads the stream from this message); otherwise check who publishes on the stream's subjects"
	}
	return fmt.Sprintf("source %q stopped: %s at segment %d offset %d (stream sequence %d, applied up to %d:%d): %v; %s",
		e.Source, e.Kind, e.Segment, e.Offset, e.StreamSeq, e.AppliedSegment, e.AppliedOffset, e.Err, hint)
}

func (e *SourceError) Unwrap() error { return e.Err }
