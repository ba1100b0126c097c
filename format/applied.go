package format

import (
	"encoding/binary"
	"fmt"
)

// Applied is the payload of an applied frame (type 128): the legacy was
// delivered a command it had carried out at an earlier delivery, and writes
// that outcome again (SPEC.md, "Write-back records"), without carrying it
// out again. A command redelivered after the agent forgot its id (the
// agent's rescan horizon, a service resubmitting it days later) would else
// wait for an outcome that is already far behind in the change files.
//
// It changes no data and is final when written, like a rejection frame.
// Receivers that already hold the command's outcome keep that one; a reader
// that does not know the type skips it (an optional type, 128-255).
type Applied struct {
	// Time is when the legacy wrote this record (not when it carried the
	// command out), in Unix nanoseconds.
	Time int64
	// Command is the command's id; Origin the submitting service.
	Command string
	Origin  string
	// TxID is the id of the transaction that carried the command out, as
	// its transaction frame gave it ("" if the legacy does not know it).
	TxID string
	// Version is the row version that transaction wrote (0: unknown, or the
	// legacy does not keep row versions).
	Version uint64
}

// Applied payload layout (SPEC.md, "Write-back records"):
//
//	| time i64 | command: uvarint len + bytes (1-1024) | origin: uvarint len + bytes (0-1024) |
//	| tx id: uvarint len + bytes (0-1024) | version uvarint |
const minAppliedLen = 8 + 2 + 1 + 1 + 1

func validApplied(a *Applied) error {
	switch {
	case a.Command == "":
		return fmt.Errorf("%w: applied record without a command id", ErrInvalid)
	case len(a.Command) > MaxIDLen:
		return fmt.Errorf("%w: command id of %d bytes (max %d)", ErrTooLarge, len(a.Command), MaxIDLen)
	case len(a.Origin) > MaxIDLen:
		return fmt.Errorf("%w: origin of %d bytes (max %d)", ErrTooLarge, len(a.Origin), MaxIDLen)
	case len(a.TxID) > MaxIDLen:
		return fmt.Errorf("%w: transaction id of %d bytes (max %d)", ErrTooLarge, len(a.TxID), MaxIDLen)
	}
	return nil
}

// AppendApplied validates a and appends it to dst as one applied frame.
func AppendApplied(dst []byte, a Applied) ([]byte, error) {
	if err := validApplied(&a); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(a.Time))
	dst = appendBytes(dst, a.Command)
	dst = appendBytes(dst, a.Origin)
	dst = appendBytes(dst, a.TxID)
	dst = binary.AppendUvarint(dst, a.Version)
	finishFrame(dst[start:], FrameApplied)
	return dst, nil
}

// DecodeApplied decodes an applied frame's payload.
func DecodeApplied(payload []byte) (Applied, error) {
	d := decoder{b: payload}
	a := Applied{Time: int64(d.u64())}
	a.Command = d.str(MaxIDLen, "")
	a.Origin = d.str(MaxIDLen, "")
	a.TxID = d.str(MaxIDLen, "")
	a.Version = d.uvarint()
	if d.err != nil {
		return Applied{}, d.err
	}
	if a.Command == "" {
		return Applied{}, d.fail("applied record without a command id")
	}
	if d.off != len(d.b) {
		return Applied{}, d.fail("%d trailing bytes after the version", len(d.b)-d.off)
	}
	return a, nil
}

// RecordApplied appends an applied frame: the legacy found command a.Command
// already carried out (see Applied). Like Reject it is final when written
// and follows the sync policy. Only for a command whose carrying out the
// legacy's own record proves committed: it marks the command applied at
// receivers that did not see its transaction.
func (w *Writer) RecordApplied(a Applied) (Position, error) {
	if err := validApplied(&a); err != nil {
		return Position{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	pos, end, err := w.appendFrameLocked(func(b []byte) ([]byte, error) { return AppendApplied(b, a) })
	if err != nil {
		return Position{}, err
	}
	return pos, w.waitSyncedLocked(end)
}
