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
