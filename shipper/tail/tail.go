// Package tail follows the chain of segment files of one source while a
// writer appends to it, and hands out byte ranges of whole, checksum-verified
// frames, ready to ship as they are.
//
// A Follower reads each segment in large chunks into one reused buffer and
// checks every frame's CRC with format.ParseFrame. It follows the chain
// through seal frames (the seal names the next segment), waits on a partial
// frame, and when a later segment exists while the current one is unsealed
// (the writer crashed and restarted) it ends the current one at its last
// whole frame and reports the torn bytes. Whether bytes that do not form a
// frame are a torn tail or corruption is decided exactly as format.Reader
// decides it (it is asked). Corruption in the middle of a segment, a file that
// shrinks, a header that does not match its file name, or a gap in the
// segment numbers stop the Follower with a sticky error naming the file and
// the offset; nothing is ever skipped silently.
//
// A Follower never blocks: Fill returns what is there now. Watch (fsnotify)
// tells when to look again; callers also poll, since events can be lost.
package tail

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrysync/ferry/format"
)

// Errors. Follower errors are *format.PositionError wrapping one of these or
// one of format's sentinel errors (ErrChecksum, ErrCorrupt, ErrBadMagic…).
var (
	// ErrShrunk means a segment file got shorter: append-only was broken.
	ErrShrunk = errors.New("tail: segment file shrank")
	// ErrGap means a segment is missing from the chain.
	ErrGap = errors.New("tail: gap in the segment chain")
	// ErrHeader means a segment header that does not match its file name.
	ErrHeader = errors.New("tail: segment header does not match its file")
	// ErrMissing means the segment to start from does not exist.
	ErrMissing = errors.New("tail: segment file missing")
)

// Span is a byte range [From, To) of whole frames of one segment.
type Span struct {
	Segment uint64
	From    int64
	To      int64
	// Raw holds the frames' bytes as on disk. It aliases the Follower's
	// buffer: valid until the next Fill or Consume. Nil for a Big span.
	Raw []byte
	// Big marks a single frame larger than the Follower's byte limit, whose
	// CRC has been verified; read it in pieces with ReadAt.
	Big         bool
	Frames      int
	Changes     int
	FirstCommit int64 // first non-zero frame time in the range, Unix ns
	LastCommit  int64 // last non-zero frame time
	// Sealed is set when the range ends with the segment's seal frame.
	Sealed bool
	// Full is set when the span cannot grow: the next frame would break a
	// limit, or the segment is sealed. Callers that linger stop waiting.
	Full bool
	// PrevEnd is set (>= 0) on the first span of a segment: where the
	// previous segment ended (0 if none was followed); -1 otherwise.
	PrevEnd int64
	// Torn is the number of bytes after PrevEnd in the previous segment that
	// did not form a whole frame (a crashed writer's torn tail).
	Torn int64
}

// Len returns the span's size in bytes.
func (s *Span) Len() int64 { return s.To - s.From }

// Options of a Follower.
type Options struct {
	// MaxBytes bounds a span's size; a single larger frame is a Big span.
	MaxBytes int
	// MaxChanges bounds the changes in a span (a frame is never split).
	MaxChanges int
	// ListEvery is how often, at most, the directory is listed to detect a
	// gap while waiting at the end of a segment. Default 1 s.
	ListEvery time.Duration
}

// Follower follows one source's chain of segments. It is not safe for
// concurrent use.
type Follower struct {
	dir, source string
	opts        Options

	seg    uint64
	path   string
	f      *os.File
	hdrLen int64
	size   int64 // largest size seen of the current file

	buf    []byte
	bufOff int64 // file offset of buf[0]
	hi     int   // buf[:hi] holds file bytes [bufOff, bufOff+hi)

	pos  int64 // consume point: the next span starts here
	scan int64 // frames in [pos, scan) are verified and in acc
	acc  Span
	full bool // acc cannot take the next frame

	sealed   bool
	sealNext uint64
	nextSeen bool // a later segment exists: the current one is abandoned once read to its end
	prevEnd  int64
	torn     int64
	lastList time.Time
	scratch  []byte
	crcTable *crc32.Table
	err      error
}

// Open returns a Follower of source in dir positioned at from: a frame
// boundary of segment from.Segment, or from.Offset 0 for the segment's first
// frame with no earlier segment shipped (the first span then has PrevEnd 0).
func Open(dir, source string, from format.Position, opts Options) (*Follower, error) {
	if !format.ValidSource(source) {
		return nil, fmt.Errorf("tail: invalid source name %q", source)
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 20
	}
	if opts.MaxChanges <= 0 {
		opts.MaxChanges = 1 << 30
	}
	if opts.ListEvery <= 0 {
		opts.ListEvery = time.Second
	}
	fl := &Follower{
		dir: dir, source: source, opts: opts,
		buf:      make([]byte, 2*opts.MaxBytes+64<<10),
		scratch:  make([]byte, 64<<10),
		prevEnd:  -1,
		crcTable: crc32.MakeTable(crc32.Castagnoli),
	}
	if from.Offset == 0 {
		fl.prevEnd = 0
	}
	if err := fl.openSegment(from.Segment, from.Offset); err != nil {
		return nil, err
	}
	return fl, nil
}

// First returns the position of source's first segment in dir, for a
// Follower that starts from scratch (Offset 0).
func First(dir, source string) (format.Position, bool, error) {
	segs, err := format.ListSegments(dir, source)
	if err != nil {
		return format.Position{}, false, err
	}
	if len(segs) == 0 {
		return format.Position{}, false, nil
	}
	return format.Position{Segment: segs[0].Segment}, true, nil
}

// Close closes the current file.
func (fl *Follower) Close() error {
	if fl.f != nil {
		err := fl.f.Close()
		fl.f = nil
		return err
	}
	return nil
}

// Pos returns the consume point: where the next span starts.
func (fl *Follower) Pos() format.Position {
	return format.Position{Segment: fl.seg, Offset: fl.pos}
}

// Path returns the current segment file.
func (fl *Follower) Path() string { return fl.path }

// Size returns the size last seen of the current segment file.
func (fl *Follower) Size() int64 { return fl.size }

// Err returns the sticky error, if any.
func (fl *Follower) Err() error { return fl.err }

func (fl *Follower) fail(off int64, err error) error {
	fl.err = &format.PositionError{Path: fl.path, Segment: fl.seg, Offset: off, Err: err}
	return fl.err
}

// openSegment opens segment seg and positions the Follower at off (0 for the
// first frame). A file whose header is not complete yet is opened again on
// the next Fill.
func (fl *Follower) openSegment(seg uint64, off int64) error {
	path := filepath.Join(fl.dir, format.SegmentName(fl.source, seg))
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &format.PositionError{Path: path, Segment: seg, Offset: off,
				Err: fmt.Errorf("%w: %v (was it deleted or moved? the shipper must start from it)", ErrMissing, err)}
		}
		return fmt.Errorf("tail: opening segment: %w", err)
	}
	if fl.f != nil {
		fl.f.Close()
	}
	fl.f, fl.path, fl.seg = f, path, seg
	fl.size, fl.bufOff, fl.hi, fl.hdrLen = 0, 0, 0, 0
	fl.pos, fl.scan, fl.full = off, off, false
	fl.sealed, fl.sealNext, fl.nextSeen = false, 0, false
	fl.acc = Span{}
	return nil
}

// readHeader reads and checks the header of the current segment; false means
// it is not complete yet.
func (fl *Follower) readHeader() (bool, error) {
	n, err := fl.f.ReadAt(fl.buf[:format.MaxHeaderLen], 0)
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("tail: reading header of %s: %w", fl.path, err)
	}
	h, err := format.ParseHeader(fl.buf[:n])
	if errors.Is(err, format.ErrTornTail) {
		return false, nil
	}
	if err != nil {
		return false, fl.fail(0, err)
	}
	if h.Source != fl.source || h.Segment != fl.seg {
		return false, fl.fail(0, fmt.Errorf("%w: header names source %q segment %d; move the file away if it does not belong here",
			ErrHeader, h.Source, h.Segment))
	}
	fl.hdrLen = int64(h.Len)
	if fl.pos == 0 {
		fl.pos, fl.scan = fl.hdrLen, fl.hdrLen
	} else if fl.pos < fl.hdrLen {
		return false, fl.fail(fl.pos, fmt.Errorf("%w: start offset inside the segment header", format.ErrCorrupt))
	}
	fl.bufOff, fl.hi = fl.pos, 0
	return true, nil
}

// Fill returns the frames available from the consume point, up to the
// limits, without consuming them: a later Fill may return a longer span with
// the same From. An empty span (To == From) means nothing is available yet.
// Errors are sticky.
func (fl *Follower) Fill() (Span, error) {
	if fl.err != nil {
		return Span{}, fl.err
	}
	for {
		if fl.hdrLen == 0 {
			ok, err := fl.readHeader()
			if err != nil {
				return Span{}, err
			}
			if !ok {
				if err := fl.checkAbandonedHeader(); err != nil {
					return Span{}, err
				}
				return fl.empty(), nil
			}
		}
		big, err := fl.parse()
		if err != nil {
			if fl.err != nil && fl.acc.Frames > 0 {
				// Ship the good frames before the fault; the next Fill
				// reports it.
				fl.full = true
				return fl.span(false), nil
			}
			return Span{}, err
		}
		if big || fl.acc.Frames > 0 {
			return fl.span(big), nil
		}
		moved, err := fl.atEnd()
		if err != nil {
			return Span{}, err
		}
		if !moved {
			return fl.empty(), nil
		}
	}
}

func (fl *Follower) empty() Span {
	return Span{Segment: fl.seg, From: fl.pos, To: fl.pos, PrevEnd: -1}
}

func (fl *Follower) span(big bool) Span {
	s := fl.acc
	s.Segment, s.From, s.To, s.Big = fl.seg, fl.pos, fl.scan, big
	s.Full = fl.full || fl.sealed
	s.PrevEnd, s.Torn = fl.prevEnd, 0
	if fl.prevEnd >= 0 {
		s.Torn = fl.torn
	}
	if !big {
		s.Raw = fl.buf[fl.pos-fl.bufOff : fl.scan-fl.bufOff]
	}
	return s
}

// Consume moves the consume point past s, which Fill returned last.
func (fl *Follower) Consume(s Span) {
	if s.To <= s.From || s.Segment != fl.seg || s.From != fl.pos || s.To != fl.scan {
		return
	}
	fl.pos = s.To
	fl.acc, fl.full = Span{}, false
	fl.prevEnd, fl.torn = -1, 0
	if s.Big {
		fl.bufOff, fl.hi = fl.pos, 0
	}
}

// ReadAt reads bytes of the current segment (the pieces of a Big span).
func (fl *Follower) ReadAt(p []byte, off int64) (int, error) {
	n, err := fl.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("tail: reading %s at %d: %w", fl.path, off, err)
	}
	return n, nil
}

// parse verifies frames from scan on, reading more as needed, until the span
// is full, the data ends, or the seal is reached. It reports a Big frame.
func (fl *Follower) parse() (bool, error) {
	readEOF := false
	for !fl.full && !fl.sealed {
		b := fl.buf[fl.scan-fl.bufOff : fl.hi]
		f, n, err := format.ParseFrame(b)
		if err == nil {
			if n > fl.opts.MaxBytes {
				if fl.acc.Frames > 0 {
					fl.full = true
					return false, nil
				}
				return fl.bigFrame(n)
			}
			changes, err := fl.check(f, fl.scan)
			if err != nil {
				return false, err
			}
			if fl.acc.Frames > 0 && (fl.scan+int64(n)-fl.pos > int64(fl.opts.MaxBytes) || fl.acc.Changes+changes > fl.opts.MaxChanges) {
				fl.full = true
				return false, nil
			}
			fl.add(f, changes)
			fl.scan += int64(n)
			continue
		}
		if !errors.Is(err, format.ErrTornTail) {
			// Not a whole valid frame: torn tail or corruption, as
			// format.Reader classifies it.
			return false, fl.classify()
		}
		if need := format.FrameLen(b); need > fl.opts.MaxBytes {
			if fl.acc.Frames > 0 {
				fl.full = true
				return false, nil
			}
			return fl.bigFrame(need)
		}
		if readEOF {
			return false, nil
		}
		got, err := fl.read()
		if err != nil {
			return false, err
		}
		readEOF = !got
	}
	return false, nil
}

// read reads more of the file into the buffer and reports whether bytes
// arrived.
func (fl *Follower) read() (bool, error) {
	if start := int(fl.pos - fl.bufOff); start > 0 && (fl.hi == len(fl.buf) || start > len(fl.buf)/2) {
		fl.hi = copy(fl.buf, fl.buf[start:fl.hi])
		fl.bufOff = fl.pos
	}
	if fl.hi == len(fl.buf) {
		return false, nil // full of a span that the caller will take first
	}
	n, err := fl.f.ReadAt(fl.buf[fl.hi:], fl.bufOff+int64(fl.hi))
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("tail: reading %s at %d: %w", fl.path, fl.bufOff+int64(fl.hi), err)
	}
	fl.hi += n
	if end := fl.bufOff + int64(fl.hi); end > fl.size {
		fl.size = end
	}
	return n > 0, nil
}

// check validates a whole frame's type and returns its change count.
func (fl *Follower) check(f format.Frame, off int64) (int, error) {
	switch {
	case f.Type == format.FrameTx:
		c, err := format.TxChangeCount(f.Payload, len(f.Payload))
		if err != nil {
			return 0, fl.fail(off, fmt.Errorf("transaction header: %w", err))
		}
		return c, nil
	case f.Type == format.FrameSeal:
		s, err := format.DecodeSeal(f.Payload)
		if err != nil {
			return 0, fl.fail(off, err)
		}
		if s.Next != fl.seg+1 {
			return 0, fl.fail(off, fmt.Errorf("%w: seal of segment %d names segment %d as next, want %d", format.ErrCorrupt, fl.seg, s.Next, fl.seg+1))
		}
		fl.sealNext = s.Next
		return 0, nil
	case f.Type == format.FrameHeartbeat, f.Type.Skippable():
		return 0, nil
	}
	return 0, fl.fail(off, fmt.Errorf("%w: unknown frame type %d", format.ErrCorrupt, f.Type))
}

func (fl *Follower) add(f format.Frame, changes int) {
	fl.acc.Frames++
	fl.acc.Changes += changes
	if t := format.FrameTime(f); t != 0 {
		if fl.acc.FirstCommit == 0 {
			fl.acc.FirstCommit = t
		}
		fl.acc.LastCommit = t
	}
	if f.Type == format.FrameSeal {
		fl.sealed, fl.acc.Sealed = true, true
	}
}

// bigFrame handles a frame of n bytes at scan, larger than a span may be: it
// waits until the frame is whole on disk, verifies its CRC in a streaming
// pass, and reports it as a Big span.
func (fl *Follower) bigFrame(n int) (bool, error) {
	end := fl.scan + int64(n)
	st, err := fl.f.Stat()
	if err != nil {
		return false, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	if st.Size() > fl.size {
		fl.size = st.Size()
	}
	if st.Size() < end {
		return false, nil // still being written, or a torn tail: atEnd decides
	}
	var hdr [format.FrameHeaderLen]byte
	if _, err := fl.ReadAt(hdr[:], fl.scan); err != nil {
		return false, err
	}
	want := binary.LittleEndian.Uint32(hdr[4:8])
	typ := format.FrameType(hdr[8])
	crc := crc32.Update(0, fl.crcTable, hdr[8:9])
	var head []byte
	for off := fl.scan + format.FrameHeaderLen; off < end; {
		k := min(int64(len(fl.scratch)), end-off)
		if _, err := fl.ReadAt(fl.scratch[:k], off); err != nil {
			return false, err
		}
		crc = crc32.Update(crc, fl.crcTable, fl.scratch[:k])
		if head == nil {
			head = append([]byte(nil), fl.scratch[:min(k, format.MaxTxHeaderLen)]...)
		}
		off += k
	}
	if crc != want {
		return false, fl.classify()
	}
	f := format.Frame{Type: typ, Payload: head}
	if typ != format.FrameTx && !typ.Skippable() {
		return false, fl.fail(fl.scan, fmt.Errorf("%w: %s frame of %d bytes", format.ErrCorrupt, typ, n))
	}
	changes := 0
	if typ == format.FrameTx {
		c, err := format.TxChangeCount(head, n-format.FrameHeaderLen)
		if err != nil {
			return false, fl.fail(fl.scan, fmt.Errorf("transaction header: %w", err))
		}
		changes = c
	}
	fl.add(f, changes)
	fl.scan = end
	fl.full = true
	return true, nil
}

// classify asks format.Reader what the bytes at scan are. A torn tail (a
// write in progress, or a crashed writer's last frame) is not an error here:
// atEnd decides once the writer has moved on. Anything else stops the
// Follower.
func (fl *Follower) classify() error {
	rd, f, err := format.OpenReader(fl.path, fl.scan)
	if err != nil {
		return fl.fail(fl.scan, err)
	}
	defer f.Close()
	_, err = rd.Next()
	switch {
	case err == nil, err == io.EOF:
		return nil // the data changed under us (a write completed): parse again
	case errors.Is(err, format.ErrTornTail):
		return nil
	}
	var pe *format.PositionError
	if errors.As(err, &pe) {
		fl.err = pe
		return pe
	}
	return fl.fail(fl.scan, err)
}

// atEnd is called when no whole frame follows scan. It moves on to the next
// segment when the current one is sealed or abandoned, and reports whether
// it did.
func (fl *Follower) atEnd() (bool, error) {
	st, err := fl.f.Stat()
	if err != nil {
		return false, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	if st.Size() < fl.size || st.Size() < fl.scan {
		return false, fl.fail(st.Size(), fmt.Errorf("%w: from %d to %d bytes (shipped up to %d); segments are append-only: restore the file or move the source's files away",
			ErrShrunk, max(fl.size, fl.scan), st.Size(), fl.pos))
	}
	grew := st.Size() > fl.size
	fl.size = st.Size()
	if fl.sealed {
		if st.Size() > fl.scan {
			return false, fl.fail(fl.scan, fmt.Errorf("%w: %d bytes after the seal frame", format.ErrCorrupt, st.Size()-fl.scan))
		}
		return fl.moveOn(fl.sealNext, 0)
	}
	if grew {
		return true, nil // more bytes arrived since we read: parse them first
	}
	next := fl.seg + 1
	if !fl.nextSeen {
		if _, err := os.Stat(filepath.Join(fl.dir, format.SegmentName(fl.source, next))); err == nil {
			// The writer has moved on; read the current segment to its end
			// once more (a seal may have landed meanwhile), then abandon it.
			fl.nextSeen = true
			return true, nil
		}
		return false, fl.checkGap(next)
	}
	// Abandoned by a crashed writer: what did not form a frame is torn.
	if rest := st.Size() - fl.scan; rest > 0 {
		if err := fl.classify(); err != nil {
			return false, err
		}
	}
	return fl.moveOn(next, st.Size()-fl.scan)
}

// moveOn opens segment next, recording where the current one ended.
func (fl *Follower) moveOn(next uint64, torn int64) (bool, error) {
	path := filepath.Join(fl.dir, format.SegmentName(fl.source, next))
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fl.checkGap(next)
		}
		return false, fmt.Errorf("tail: stat %s: %w", path, err)
	}
	end := fl.scan
	if err := fl.openSegment(next, 0); err != nil {
		return false, err
	}
	fl.prevEnd, fl.torn = end, torn
	return true, nil
}

// checkGap fails if a segment after next exists while next does not. The
// directory is listed at most every ListEvery.
func (fl *Follower) checkGap(next uint64) error {
	if time.Since(fl.lastList) < fl.opts.ListEvery {
		return nil
	}
	fl.lastList = time.Now()
	segs, err := format.ListSegments(fl.dir, fl.source)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	for _, s := range segs {
		if s.Segment > next {
			if _, err := os.Stat(filepath.Join(fl.dir, format.SegmentName(fl.source, next))); err == nil {
				return nil // created meanwhile
			}
			return fl.fail(fl.scan, fmt.Errorf("%w: segment %d is missing but %s exists; restore the missing segment",
				ErrGap, next, s.Path))
		}
	}
	return nil
}

// checkAbandonedHeader fails when a segment whose header never completed has
// been abandoned: there is no frame to ship and no position to continue from.
func (fl *Follower) checkAbandonedHeader() error {
	next := filepath.Join(fl.dir, format.SegmentName(fl.source, fl.seg+1))
	if _, err := os.Stat(next); err == nil {
		return fl.fail(0, fmt.Errorf("%w: header incomplete and the writer has moved on to %s; remove the empty file", format.ErrCorrupt, next))
	}
	return nil
}
