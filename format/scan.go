package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ErrScanLimit means that proving whether a valid frame follows some bytes
// took more work than FindFrame allows: hostile input could otherwise make
// the scan quadratic. Readers treat it as corruption (the bytes were not
// shown to be a torn tail).
var ErrScanLimit = errors.New("format: too much data follows to prove it a torn tail")

// Bounds of FindFrame: it reads its input in windows of scanWindow bytes
// and checks frames longer than a window in scanChunk pieces, so its memory
// does not depend on the input; its CRC work is bounded by scanBudget plus
// 16 bytes per byte scanned.
const (
	scanWindow = 1 << 20
	scanChunk  = 256 << 10
	scanBudget = 64 << 20
)

// FindFrame returns the offset of the first valid frame that starts in
// [from, end) of r and ends by end — a plausible length, a known or
// optional type, the payload size that type requires, a matching CRC — or
// -1 if there is none. This is the test that tells a torn tail (nothing
// valid follows the bytes that failed) from corruption in the middle of a
// segment (SPEC.md, "Readers", step 3).
//
// It reads r in bounded windows and checks long candidates in pieces, so
// its memory is a few MiB whatever the input; its CRC work is bounded
// (ErrScanLimit beyond it). Read errors other than io.EOF are returned.
func FindFrame(r io.ReaderAt, from, end int64) (int64, error) {
	if end-from < FrameHeaderLen {
		return -1, nil
	}
	win := make([]byte, min(int64(scanWindow), end-from))
	var chunk []byte
	budget := int64(scanBudget) + 16*(end-from)
	wOff, wLen := from, 0 // win[:wLen] holds r's bytes [wOff, wOff+wLen)
	for i := from; i+FrameHeaderLen <= end; i++ {
		if i+FrameHeaderLen > wOff+int64(wLen) {
			// Slide the window to start at i.
			n, err := r.ReadAt(win[:min(int64(len(win)), end-i)], i)
			if err != nil && err != io.EOF {
				return -1, fmt.Errorf("format: scanning for a valid frame at %d: %w", i, err)
			}
			wOff, wLen = i, n
			if n < FrameHeaderLen {
				return -1, nil // the data ends before end (it shrank): nothing whole
			}
		}
		h := win[i-wOff:]
		if h[8] == 0 {
			// Type 0 is no frame's: jump to the next candidate whose type
			// byte is not zero, so that a preallocated segment's zeros
			// (SPEC.md, "Writers", step 3) scan at memory speed.
			j := firstNonZero(win[i-wOff+8 : wLen])
			if j < 0 {
				i = wOff + int64(wLen) - FrameHeaderLen // the loop's i++ slides the window
				continue
			}
			i += int64(j) - 1
			continue
		}
		n := int64(binary.LittleEndian.Uint32(h))
		if n > MaxFrameLen || i+FrameHeaderLen+n > end || !plausibleFrame(FrameType(h[8]), n) {
			continue
		}
		if budget -= n + 1; budget < 0 {
			return -1, ErrScanLimit
		}
		want := binary.LittleEndian.Uint32(h[4:])
		if fe := i + FrameHeaderLen + n; fe <= wOff+int64(wLen) {
			if Checksum(h[8:FrameHeaderLen+n]) == want {
				return i, nil
			}
			continue
		}
		// Longer than what the window holds: checksum it in pieces.
		if chunk == nil {
			chunk = make([]byte, scanChunk)
		}
		ok, err := crcAt(r, h[8], want, i+FrameHeaderLen, n, chunk)
		if err != nil {
			return -1, err
		}
		if ok {
			return i, nil
		}
	}
	return -1, nil
}

// plausibleFrame reports whether a frame of type t with a payload of n
// bytes could be valid in a segment of any version this package reads: a
// known or optional type, and the payload size the type requires. Scans use
// it to skip most candidates before a CRC.
func plausibleFrame(t FrameType, n int64) bool {
	return t.KnownIn(Version) && t.PlausibleLen(int(n))
}

// crcAt reports whether the n payload bytes at off in r, after the type
// byte typ, match the CRC want, reading them in pieces of len(chunk); false
// if r ends before them.
func crcAt(r io.ReaderAt, typ byte, want uint32, off, n int64, chunk []byte) (bool, error) {
	crc := crc32.Update(0, castagnoli, []byte{typ})
	for end := off + n; off < end; {
		k, err := r.ReadAt(chunk[:min(int64(len(chunk)), end-off)], off)
		if err != nil && err != io.EOF {
			return false, fmt.Errorf("format: reading a frame at %d: %w", off, err)
		}
		if k == 0 {
			return false, nil
		}
		crc = crc32.Update(crc, castagnoli, chunk[:k])
		off += int64(k)
	}
	return crc == want, nil
}

// FrameAt reports whether the bytes at off in r, up to end, start with a
// whole frame whose CRC matches, reading it in bounded pieces: the check a
// reader makes before it buffers a frame larger than its buffer. It does not
// check the frame's type.
func FrameAt(r io.ReaderAt, off, end int64) (bool, error) {
	var hdr [FrameHeaderLen]byte
	if end-off < FrameHeaderLen {
		return false, nil
	}
	if _, err := r.ReadAt(hdr[:], off); err != nil {
		if err == io.EOF {
			return false, nil
		}
		return false, fmt.Errorf("format: reading a frame header at %d: %w", off, err)
	}
	n := int64(binary.LittleEndian.Uint32(hdr[:]))
	if n > MaxFrameLen || off+FrameHeaderLen+n > end {
		return false, nil
	}
	return crcAt(r, hdr[8], binary.LittleEndian.Uint32(hdr[4:]), off+FrameHeaderLen, n, make([]byte, min(n+1, scanChunk)))
}

// NextNonZero returns the offset of the first byte in [from, end) of r that
// is not zero, or -1 if they all are (or r ends before end): how a reader
// tells a preallocated segment's unwritten tail (SPEC.md, "Readers", step 3)
// from bytes written after it. It reads r in windows of scanChunk bytes.
func NextNonZero(r io.ReaderAt, from, end int64) (int64, error) {
	buf := make([]byte, min(int64(scanChunk), max(end-from, 0)))
	for off := from; off < end; {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if j := firstNonZero(buf[:n]); j >= 0 {
			return off + int64(j), nil
		}
		if err == io.EOF || n == 0 {
			return -1, nil
		}
		if err != nil {
			return -1, fmt.Errorf("format: reading at %d: %w", off, err)
		}
		off += int64(n)
	}
	return -1, nil
}

// firstNonZero returns the index of the first byte of b that is not zero,
// or -1: eight bytes at a time.
func firstNonZero(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}

// DataEnd returns the end of the last byte in [from, end) of r that is not
// zero, or from if they all are: where the data of a preallocated segment
// ends (its unwritten space reads as zeros). It reads r backwards in windows
// of scanChunk bytes.
func DataEnd(r io.ReaderAt, from, end int64) (int64, error) {
	buf := make([]byte, min(int64(scanChunk), max(end-from, 0)))
	for end > from {
		n := min(int64(len(buf)), end-from)
		k, err := r.ReadAt(buf[:n], end-n)
		if err != nil && err != io.EOF {
			return from, fmt.Errorf("format: reading at %d: %w", end-n, err)
		}
		for i := k - 1; i >= 0; i-- {
			if buf[i] != 0 {
				return end - n + int64(i) + 1, nil
			}
		}
		end -= n
	}
	return from, nil
}
