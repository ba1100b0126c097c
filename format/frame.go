package format

import (
	"encoding/binary"
	"fmt"
)

// Frame is one frame of a segment. Payload aliases the buffer it was parsed
// from unless copied.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// Len returns the frame's size on disk, header included.
func (f Frame) Len() int { return FrameHeaderLen + len(f.Payload) }

// AppendFrame appends a frame of type t holding payload to dst.
func AppendFrame(dst []byte, t FrameType, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, FrameHeaderLen)...)
	dst = append(dst, payload...)
	finishFrame(dst[start:], t)
	return dst
}

// beginFrame reserves a frame header in dst; finishFrame fills it in once the
// payload has been appended after it. Together they let encoders write a
// payload straight into the output without an intermediate copy.
func beginFrame(dst []byte) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0, 0), start
}

func finishFrame(frame []byte, t FrameType) {
	frame[8] = byte(t)
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(frame)-FrameHeaderLen))
	binary.LittleEndian.PutUint32(frame[4:8], Checksum(frame[8:]))
}

// ParseFrame parses the frame at the start of b and returns it with its size.
// It never trusts b: errors are
//   - ErrTornTail when b ends before the frame does (more bytes may come);
//   - ErrCorrupt when the length is impossible (over MaxFrameLen);
//   - ErrChecksum when the frame is whole but its CRC does not match.
//
// Whether a short or failed frame at the end of a file is a torn tail or
// corruption is the caller's call (see Reader and SPEC.md, "Readers");
// ParseFrame only reports it.
func ParseFrame(b []byte) (Frame, int, error) {
	if len(b) < FrameHeaderLen {
		return Frame{}, 0, ErrTornTail
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > MaxFrameLen {
		return Frame{}, 0, fmt.Errorf("%w: frame length %d over limit %d", ErrCorrupt, n, MaxFrameLen)
	}
	end := FrameHeaderLen + int(n)
	if len(b) < end {
		return Frame{}, 0, ErrTornTail
	}
	if got, want := Checksum(b[8:end]), binary.LittleEndian.Uint32(b[4:8]); got != want {
		return Frame{}, 0, fmt.Errorf("%w: frame crc %08x, computed %08x", ErrChecksum, want, got)
	}
	return Frame{Type: FrameType(b[8]), Payload: b[FrameHeaderLen:end]}, end, nil
}

// FrameLen returns the total size of the frame starting at b if its header is
// there and its length plausible, or -1.
func FrameLen(b []byte) int {
	if len(b) < FrameHeaderLen {
		return -1
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > MaxFrameLen {
		return -1
	}
	return FrameHeaderLen + int(n)
}

// allZero reports whether b holds only zero bytes: file systems that crash
// after extending a file but before writing its data leave zeros.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
