package format

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// MaxReasonLen bounds a rejection's reason.
const MaxReasonLen = 4096

// Rejection is the payload of a rejection frame: the legacy refused a
// write-back command (a stale row version, a business rule) and says why
// (SPEC.md, "Write-back records"). The command's effect is nothing: no
// change of the legacy's data goes with it.
type Rejection struct {
	// Time is when the legacy rejected the command, in Unix nanoseconds.
	Time int64
	// Command is the command's id as the service submitted it; Origin the
	// service.
	Command string
	Origin  string
	// Reason is for people and services: UTF-8 text.
	Reason string
}

// Rejection payload layout (SPEC.md, "Write-back records"):
//
//	| time i64 | command: uvarint len + bytes (1-1024) |
//	| origin: uvarint len + bytes (0-1024) | reason: uvarint len + bytes (0-4096) |
const minRejectionLen = 8 + 2 + 1 + 1

func validRejection(r *Rejection) error {
	switch {
	case r.Command == "":
		return fmt.Errorf("%w: rejection without a command id", ErrInvalid)
	case len(r.Command) > MaxIDLen:
		return fmt.Errorf("%w: command id of %d bytes (max %d)", ErrTooLarge, len(r.Command), MaxIDLen)
	case len(r.Origin) > MaxIDLen:
		return fmt.Errorf("%w: origin of %d bytes (max %d)", ErrTooLarge, len(r.Origin), MaxIDLen)
	case len(r.Reason) > MaxReasonLen:
		return fmt.Errorf("%w: reason of %d bytes (max %d)", ErrTooLarge, len(r.Reason), MaxReasonLen)
	case !utf8.ValidString(r.Reason):
		return fmt.Errorf("%w: reason is not UTF-8", ErrInvalid)
	}
	return nil
}

// AppendRejection validates r and appends it to dst as one rejection frame.
func AppendRejection(dst []byte, r Rejection) ([]byte, error) {
	if err := validRejection(&r); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
	dst = appendBytes(dst, r.Command)
	dst = appendBytes(dst, r.Origin)
	dst = appendBytes(dst, r.Reason)
	finishFrame(dst[start:], FrameRejection)
	return dst, nil
}

// DecodeRejection decodes a rejection frame's payload.
func DecodeRejection(payload []byte) (Rejection, error) {
	d := decoder{b: payload}
	r := Rejection{Time: int64(d.u64())}
	r.Command = d.str(MaxIDLen, "")
	r.Origin = d.str(MaxIDLen, "")
	r.Reason = d.str(MaxReasonLen, "")
	if d.err != nil {
		return Rejection{}, d.err
	}
	if r.Command == "" {
		return Rejection{}, d.fail("rejection without a command id")
	}
	if !utf8.ValidString(r.Reason) {
		return Rejection{}, d.fail("reason is not UTF-8")
	}
	if d.off != len(d.b) {
		return Rejection{}, d.fail("%d trailing bytes after the reason", len(d.b)-d.off)
	}
	return r, nil
}

// Reject appends a rejection frame: the legacy refused command (see
// Rejection). It is final when written, like a committed transaction, and
// follows the sync policy like Commit.
func (w *Writer) Reject(r Rejection) (Position, error) {
	if err := validRejection(&r); err != nil {
		return Position{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	pos, end, err := w.appendFrameLocked(func(b []byte) ([]byte, error) { return AppendRejection(b, r) })
	if err != nil {
		return Position{}, err
	}
	return pos, w.waitSyncedLocked(end)
}
