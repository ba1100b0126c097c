package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader reads the frames of one segment, verifying every checksum. It can
// follow a segment that is still being written: at the end of the data it
// returns io.EOF (nothing more yet) or ErrTornTail (a partial frame so far),
// and a later Next reads on from where it stopped. Corruption in the middle
// is sticky: once reported, Next keeps returning it.
//
// Bytes that do not form a valid frame are ErrTornTail when no valid frame
// starts anywhere after them, and sticky corruption when one does. A Reader
// does not decide whether a torn tail is a crashed writer's or a write in
// progress; its caller knows whether the writer has moved on (see SPEC.md,
// "Readers"). Zeros from a frame boundary to the end of the file are no
// data yet (a preallocated segment, SPEC.md "Readers", step 3): Next returns
// io.EOF there and reads them again next time, as frames may since have
// been written in place. Other bytes below the file's size it takes as
// final, except that a frame found bad is read once more before a valid
// frame after it makes it corruption.
//
// Memory: when its input is also an io.ReaderAt that knows its size (an
// *os.File, a *bytes.Reader), a Reader holds at most one valid frame plus a
// read chunk: a frame's CRC is checked in pieces before a frame larger than
// the buffer is buffered, and telling a torn tail from corruption reads the
// rest of the file in bounded windows (FindFrame). Over a plain io.Reader it
// has to buffer the rest of the input for that.
type Reader struct {
	r      io.Reader
	ra     io.ReaderAt           // r, when it is one
	size   func() (int64, error) // the size of ra's data, when known
	path   string
	hdr    SegmentHeader
	walk   *Walker
	buf    []byte
	lo, hi int   // unread bytes are buf[lo:hi]
	off    int64 // file offset of buf[lo]
	last   int64 // offset of the frame Next returned last
	raw    []byte
	eof    bool // the underlying reader reported EOF on its last read
	// zeroTo is where the zeros found after r.off end, once checked: the
	// next look at a preallocated tail reads only what lies beyond.
	zeroTo int64
	err    error
}

const readChunk = 256 << 10

// NewReader reads and checks the segment header from r and returns a Reader
// positioned at the first frame. path is used in errors only.
func NewReader(r io.Reader, path string) (*Reader, error) {
	rd := &Reader{r: r, path: path, buf: make([]byte, readChunk)}
	if ra, ok := r.(io.ReaderAt); ok {
		switch v := r.(type) {
		case interface{ Stat() (os.FileInfo, error) }:
			rd.ra, rd.size = ra, func() (int64, error) {
				fi, err := v.Stat()
				if err != nil {
					return 0, err
				}
				return fi.Size(), nil
			}
		case interface{ Size() int64 }:
			rd.ra, rd.size = ra, func() (int64, error) { return v.Size(), nil }
		}
	}
	for {
		h, err := ParseHeader(rd.buf[rd.lo:rd.hi])
		if err == nil {
			rd.hdr = h
			rd.walk = NewWalker(h.Segment, h.Version, true)
			rd.lo += h.Len
			rd.off = int64(h.Len)
			return rd, nil
		}
		if !errors.Is(err, ErrTornTail) {
			return nil, &PositionError{Path: path, Offset: 0, Err: err}
		}
		if rd.eof {
			return nil, &PositionError{Path: path, Offset: int64(rd.hi), Err: fmt.Errorf("%w: segment header incomplete (%d bytes)", ErrTornTail, rd.hi)}
		}
		if err := rd.fill(); err != nil {
			return nil, err
		}
	}
}

// OpenReader opens the segment file at path and positions its Reader at
// offset from, which must be a frame boundary (or 0 for the first frame).
// The caller closes the returned file.
func OpenReader(path string, from int64) (*Reader, *os.File, error) {
	f, err := OpenSegment(path)
	if err != nil {
		return nil, nil, err
	}
	rd, err := NewReader(f, path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if from > rd.off {
		if _, err := f.Seek(from, io.SeekStart); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("format: seeking %s to %d: %w", path, from, err)
		}
		rd.lo, rd.hi, rd.off, rd.eof = 0, 0, from, false
		rd.walk = NewWalker(rd.hdr.Segment, rd.hdr.Version, false)
	}
	return rd, f, nil
}

// Header returns the segment's header.
func (r *Reader) Header() SegmentHeader { return r.hdr }

// Offset returns the offset of the frame Next returned last.
func (r *Reader) Offset() int64 { return r.last }

// End returns the offset just past the frames read so far: where the next
// frame starts.
func (r *Reader) End() int64 { return r.off }

// Raw returns the bytes of the frame Next returned last, header included.
// They are valid until the next call to Next.
func (r *Reader) Raw() []byte { return r.raw }

// Sealed returns the seal once Next has returned it.
func (r *Reader) Sealed() (Seal, bool) { return r.walk.Sealed() }

// Next returns the next frame. Its payload is valid until the next call. At
// the end of the data it returns io.EOF, or an error wrapping ErrTornTail if
// a partial frame is there; both may be followed by more frames if the
// segment is still being written. After the seal frame it returns io.EOF
// for good. Other errors (ErrChecksum, ErrCorrupt) are *PositionError and
// sticky.
func (r *Reader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	if _, sealed := r.walk.Sealed(); sealed {
		if r.hi > r.lo || r.fillNoEOF() {
			return Frame{}, r.fail(r.off, fmt.Errorf("%w: data after the seal frame", ErrCorrupt))
		}
		return Frame{}, io.EOF
	}
	for {
		f, n, err := ParseFrame(r.buf[r.lo:r.hi])
		if err == nil {
			r.raw = r.buf[r.lo : r.lo+n]
			r.last = r.off
			r.lo += n
			r.off += int64(n)
			if _, err := r.walk.Check(f); err != nil {
				return Frame{}, r.fail(r.last, err)
			}
			return f, nil
		}
		if errors.Is(err, ErrTornTail) && r.ra != nil {
			if need := FrameLen(r.buf[r.lo:r.hi]); need > len(r.buf) {
				// Larger than the buffer: check that it is a whole valid
				// frame before buffering that much of what may be garbage.
				if cerr := r.checkBig(need); cerr != nil {
					f, err := r.badFrameAt(cerr, fmt.Sprintf("%d bytes of a frame of %d bytes", r.hi-r.lo, need-FrameHeaderLen))
					if errors.Is(err, errReread) {
						continue
					}
					return f, err
				}
				r.reserve(need)
			}
		}
		if !errors.Is(err, ErrTornTail) {
			if r.zeros() {
				if more, zerr := r.zeroTail(); zerr != nil || more {
					if zerr != nil {
						return Frame{}, zerr
					}
					continue
				}
			}
			// A frame that does not check out is a torn tail only if no
			// valid frame follows it: a writer never writes after a frame
			// it failed to write whole.
			f, err := r.badFrame(err, fmt.Sprintf("%d bytes that are not a whole valid frame (%v), nothing valid after them", r.hi-r.lo, err))
			if errors.Is(err, errReread) {
				continue
			}
			return f, err
		}
		if r.eof {
			// Try once more: a segment being written may have grown.
			r.eof = false
			grew, ferr := r.grow()
			if ferr != nil {
				return Frame{}, ferr
			}
			if grew {
				continue
			}
			if r.hi == r.lo {
				return Frame{}, io.EOF
			}
			if r.zeros() {
				if more, zerr := r.zeroTail(); zerr != nil || more {
					if zerr != nil {
						return Frame{}, zerr
					}
					continue
				}
			}
			// The frame's declared length runs past the end of the data: a
			// torn or in-progress write, unless a valid frame follows (then
			// the length field itself is corrupt).
			what, cause := partialFrame(r.buf[r.lo:r.hi])
			f, err := r.badFrame(fmt.Errorf("%w: %s", ErrCorrupt, cause), what)
			if errors.Is(err, errReread) {
				continue
			}
			return f, err
		}
		if _, ferr := r.grow(); ferr != nil {
			return Frame{}, ferr
		}
	}
}

// zeros reports whether the unread bytes, at a frame boundary, are all
// zero: no frame starts with zeros (type 0 is no frame type), so they may be
// the unwritten tail of a preallocated segment.
func (r *Reader) zeros() bool {
	return r.hi > r.lo && firstNonZero(r.buf[r.lo:r.hi]) < 0
}

// zeroTail is called with zeros at r.off. It returns io.EOF if every byte to
// the end of the input is zero: a preallocated segment's unwritten tail
// (SPEC.md, "Readers", step 3), which is neither torn nor corrupt; the
// buffered zeros are dropped, so that a later Next reads what is written
// there meanwhile. more reports that a frame was written at r.off since the
// zeros were read: parse again. Otherwise (bytes that are not zero follow
// the zeros) the caller classifies the zeros like any bad bytes.
func (r *Reader) zeroTail() (more bool, err error) {
	if r.ra == nil {
		for !r.eof {
			if _, err := r.grow(); err != nil {
				return false, err
			}
		}
		if r.zeros() {
			return false, io.EOF // the input ends in zeros; nothing to read again
		}
		return true, nil
	}
	end, err := r.size()
	if err != nil {
		return false, r.ioErr(r.off, err)
	}
	from := r.off
	if r.zeroTo > from {
		from = r.zeroTo // checked before, and a writer writes only at r.off
	}
	at, err := NextNonZero(r.ra, from, end)
	if err != nil {
		return false, r.ioErr(from, err)
	}
	if at < 0 {
		r.zeroTo = max(end, r.off)
		r.hi, r.eof = r.lo, false
		return false, io.EOF
	}
	// A reader's copy of a page can precede the writer's while its copy of
	// a later page follows it: look at r.off again.
	var h [FrameHeaderLen]byte
	n, _ := r.ra.ReadAt(h[:], r.off)
	if firstNonZero(h[:n]) >= 0 {
		r.hi, r.eof = r.lo, false
		return true, nil
	}
	return false, nil
}

// partialFrame describes bytes that end the data before their frame does:
// what they are (for a torn tail) and, if a valid frame follows them, why
// they are corrupt instead.
func partialFrame(b []byte) (what, cause string) {
	if len(b) < FrameHeaderLen {
		return fmt.Sprintf("%d bytes of a frame's %d-byte header", len(b), FrameHeaderLen),
			fmt.Sprintf("%d bytes, less than a frame header (%d bytes)", len(b), FrameHeaderLen)
	}
	n := FrameLen(b)
	if n < 0 {
		return fmt.Sprintf("a frame header declaring %d bytes, more than a frame may hold (%d)", binary.LittleEndian.Uint32(b), MaxFrameLen),
			fmt.Sprintf("frame length %d exceeds the maximum %d", binary.LittleEndian.Uint32(b), MaxFrameLen)
	}
	return fmt.Sprintf("%d bytes of a frame of %d bytes", len(b), n),
		fmt.Sprintf("frame length %d runs past the end of the data (%d bytes left)", n-FrameHeaderLen, len(b)-FrameHeaderLen)
}

// badFrame classifies the bytes at r.lo, which do not form a valid frame
// (why says how), once the rest of the input has been read: a torn tail
// (described by torn) if no valid frame starts anywhere after them (nothing,
// zeros or a partial write follow), corruption otherwise. A torn tail is not
// sticky (the write may be in progress); corruption is.
func (r *Reader) badFrame(why error, torn string) (Frame, error) {
	if r.ra != nil {
		return r.badFrameAt(why, torn)
	}
	for !r.eof {
		if _, err := r.grow(); err != nil {
			return Frame{}, err
		}
	}
	at, err := FindFrame(bytes.NewReader(r.buf[r.lo:r.hi]), 1, int64(r.hi-r.lo))
	return r.classified(why, torn, at+r.off, err)
}

// badFrameAt is badFrame over an io.ReaderAt: it scans the rest of the file
// in bounded windows, leaving the buffer as it is.
func (r *Reader) badFrameAt(why error, torn string) (Frame, error) {
	end, err := r.size()
	if err != nil {
		return Frame{}, r.ioErr(r.off, err)
	}
	at, err := FindFrame(r.ra, r.off+1, end)
	if err == nil && at > r.off {
		// Bytes written in place (a preallocated segment) change without
		// the size: the frame at r.off may have been a write in progress
		// that is whole now. Once a later frame is whole, an earlier one
		// is too, so one more look at r.off decides.
		if ok, ferr := FrameAt(r.ra, r.off, end); ferr == nil && ok {
			r.hi, r.eof = r.lo, false
			return Frame{}, errReread
		}
	}
	return r.classified(why, torn, at, err)
}

// errReread tells Next to read the bytes at r.off again: they changed.
var errReread = errors.New("format: bytes changed under the reader")

// checkBig checks that the frame of need bytes at r.off is whole in the file
// and matches its CRC, reading it in pieces; nil if it does.
func (r *Reader) checkBig(need int) error {
	end, err := r.size()
	if err != nil {
		return err
	}
	if r.off+int64(need) > end {
		return fmt.Errorf("%w: frame length %d runs past the end of the data (%d bytes left)", ErrCorrupt, need-FrameHeaderLen, end-r.off-FrameHeaderLen)
	}
	ok, err := FrameAt(r.ra, r.off, end)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: the frame of %d bytes does not match its CRC", ErrChecksum, need-FrameHeaderLen)
	}
	return nil
}

// reserve makes the buffer hold at least n unread bytes from lo, growing it
// to exactly what is needed (not by doubling) past its usual size.
func (r *Reader) reserve(n int) {
	if len(r.buf)-r.lo >= n {
		return
	}
	nb := make([]byte, n+readChunk)
	r.hi = copy(nb, r.buf[r.lo:r.hi])
	r.lo = 0
	r.buf = nb
}

func (r *Reader) ioErr(off int64, err error) error {
	r.err = &PositionError{Path: r.path, Segment: r.hdr.Segment, Offset: off, Err: err}
	return r.err
}

// classified turns what FindFrame found after the bad bytes at r.off into
// the Reader's error.
func (r *Reader) classified(why error, torn string, at int64, err error) (Frame, error) {
	switch {
	case errors.Is(err, ErrScanLimit):
		return Frame{}, r.fail(r.off, fmt.Errorf("%w; %v", why, err))
	case err != nil:
		return Frame{}, &PositionError{Path: r.path, Segment: r.hdr.Segment, Offset: r.off, Err: err}
	case at > r.off:
		return Frame{}, r.fail(r.off, fmt.Errorf("%w; a valid frame starts at offset %d", why, at))
	}
	return Frame{}, &PositionError{Path: r.path, Segment: r.hdr.Segment, Offset: r.off, Err: fmt.Errorf("%w: %s", ErrTornTail, torn)}
}

func (r *Reader) fail(off int64, err error) error {
	r.err = &PositionError{Path: r.path, Segment: r.hdr.Segment, Offset: off, Err: err}
	return r.err
}

// grow reads more input, making room as needed, and reports whether any
// bytes arrived. The buffer grows only as data actually arrives, so a
// hostile length field cannot make it allocate more than the input holds.
func (r *Reader) grow() (bool, error) {
	if r.lo > 0 && (r.hi == len(r.buf) || r.lo > len(r.buf)/2) {
		r.hi = copy(r.buf, r.buf[r.lo:r.hi])
		r.lo = 0
	}
	if r.hi == len(r.buf) {
		nb := make([]byte, 2*len(r.buf))
		r.hi = copy(nb, r.buf[r.lo:r.hi])
		r.lo = 0
		r.buf = nb
	}
	before := r.hi
	if err := r.fill(); err != nil {
		return false, err
	}
	return r.hi > before, nil
}

func (r *Reader) fill() error {
	if r.hi == len(r.buf) {
		_, err := r.grow()
		return err
	}
	var n int
	var err error
	if r.ra != nil {
		// Positioned, so that bytes dropped from the buffer (a
		// preallocated tail's zeros) are read again.
		n, err = r.ra.ReadAt(r.buf[r.hi:], r.off+int64(r.hi-r.lo))
	} else {
		n, err = r.r.Read(r.buf[r.hi:])
	}
	r.hi += n
	if err == io.EOF || (n == 0 && err == nil) {
		r.eof = true
		return nil
	}
	if err != nil {
		r.err = &PositionError{Path: r.path, Segment: r.hdr.Segment, Offset: r.off + int64(r.hi-r.lo), Err: err}
		return r.err
	}
	return nil
}

// fillNoEOF reports whether more input is available right now.
func (r *Reader) fillNoEOF() bool {
	grew, err := r.grow()
	r.eof = false
	return err == nil && grew
}
