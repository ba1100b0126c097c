package format

import (
	"fmt"
)

// Walker holds the rules of where frames may appear in a segment (SPEC.md,
// sections 6, 8 and 12): which frame types a segment may hold, that a seal
// names the next segment and, when the whole segment was seen, counts what
// it holds, and that nothing follows a seal. Every reader of frames — the
// segment Reader, the shipper's tail, a receiver applying wire batches —
// checks each whole, CRC-verified frame with one Walker per segment, so the
// rules live here once.
//
// A Walker does not decode transactions' changes: it reads a transaction's
// header (DecodeTx's rules, up to the change count) and leaves the changes
// to whoever applies them. Outcome and rejection frames (version 2) are
// decoded whole when they are in memory.
type Walker struct {
	segment   uint64
	version   uint16
	fromStart bool
	txs, chs  uint64
	seal      *Seal
	outcome   Outcome // reused to check outcome frames
}

// NewWalker returns a Walker of the frames of segment seg, of format version
// version (0: this package's Version, for readers that do not see the
// header, such as receivers of wire batches). fromStart says the frames will
// be checked from the segment's first frame on: only then can the seal's
// counts be checked.
func NewWalker(seg uint64, version uint16, fromStart bool) *Walker {
	if version == 0 {
		version = Version
	}
	return &Walker{segment: seg, version: version, fromStart: fromStart}
}

// FrameInfo is what Walker.Check learned of a valid frame.
type FrameInfo struct {
	// Changes is a transaction's change count (0 for other frames).
	Changes int
	// Time is the frame's commit, heartbeat or seal time (0 if none).
	Time int64
	// Seal is set for the segment's seal frame.
	Seal *Seal

	tx bool
}

// Add counts a frame CheckPrefix accepted as the segment's next one.
func (w *Walker) Add(info FrameInfo) {
	if info.tx {
		w.txs++
		w.chs += uint64(info.Changes)
	}
	if info.Seal != nil {
		w.seal = info.Seal
	}
}

// Check checks f, a whole frame whose CRC matched, as the next frame of the
// segment, and on success counts it (Add). Errors wrap ErrCorrupt (the
// caller adds where: file and offset); a caller must stop there.
func (w *Walker) Check(f Frame) (FrameInfo, error) {
	info, err := w.CheckPrefix(f.Type, f.Payload, len(f.Payload))
	if err == nil {
		w.Add(info)
	}
	return info, err
}

// CheckPrefix checks a frame of type t and payloadLen bytes as the next
// frame, without counting it: a caller that may leave the frame for later
// (a batch is full) calls Add once it takes it. Only prefix of the payload
// need be in memory (at least its first MaxTxHeaderLen bytes, or all of
// it): a frame too large to hold, whose CRC was verified in a streaming
// pass. Only transactions and optional frames may be that large.
func (w *Walker) CheckPrefix(t FrameType, prefix []byte, payloadLen int) (FrameInfo, error) {
	if w.seal != nil {
		return FrameInfo{}, fmt.Errorf("%w: %s frame after the seal of segment %d: nothing may follow a seal", ErrCorrupt, t, w.segment)
	}
	whole := len(prefix) >= payloadLen
	info := FrameInfo{Time: FrameTime(Frame{Type: t, Payload: prefix})}
	switch {
	case t == FrameTx:
		c, err := TxChangeCount(prefix, payloadLen)
		if err != nil {
			return FrameInfo{}, fmt.Errorf("transaction header: %w", err)
		}
		info.Changes = c
		info.tx = true
	case t == FrameSeal && whole:
		s, err := DecodeSeal(prefix)
		if err != nil {
			return FrameInfo{}, err
		}
		if s.Next != w.segment+1 {
			return FrameInfo{}, fmt.Errorf("%w: seal of segment %d names segment %d as next, want %d", ErrCorrupt, w.segment, s.Next, w.segment+1)
		}
		if w.fromStart && (s.Transactions != w.txs || s.Changes != w.chs) {
			return FrameInfo{}, fmt.Errorf("%w: the seal of segment %d counts %d transactions and %d changes, the segment holds %d and %d",
				ErrCorrupt, w.segment, s.Transactions, s.Changes, w.txs, w.chs)
		}
		info.Seal = &s
	case t == FrameHeartbeat && whole:
		if _, err := DecodeHeartbeat(prefix); err != nil {
			return FrameInfo{}, err
		}
	case !t.KnownIn(w.version):
		return FrameInfo{}, fmt.Errorf("%w: frame type %d unknown in a version %d segment", ErrCorrupt, uint8(t), w.version)
	case t == FrameSeal, t == FrameHeartbeat:
		return FrameInfo{}, fmt.Errorf("%w: %s frame of %d bytes", ErrCorrupt, t, payloadLen)
	case t == FrameOutcome && whole:
		if err := DecodeOutcome(prefix, &w.outcome); err != nil {
			return FrameInfo{}, fmt.Errorf("outcome: %w", err)
		}
	case t == FrameRejection && whole:
		if _, err := DecodeRejection(prefix); err != nil {
			return FrameInfo{}, fmt.Errorf("rejection: %w", err)
		}
	case t == FrameApplied && whole:
		if _, err := DecodeApplied(prefix); err != nil {
			return FrameInfo{}, fmt.Errorf("applied: %w", err)
		}
	}
	return info, nil
}

// SetSealed tells the Walker that the segment's seal was checked before it
// (a receiver resuming at a sealed position): every frame it is then asked
// to check is corruption.
func (w *Walker) SetSealed(s Seal) { w.seal = &s }

// Sealed returns the seal once Check has accepted it (or SetSealed set it).
func (w *Walker) Sealed() (Seal, bool) {
	if w.seal == nil {
		return Seal{}, false
	}
	return *w.seal, true
}

// Counts returns the transactions and changes checked so far.
func (w *Walker) Counts() (txs, changes uint64) { return w.txs, w.chs }
