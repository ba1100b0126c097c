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
	"bytes"
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
	// previous segment ended (0 if none was followed, or none before this
	// one held a frame: the chain starts here); -1 otherwise.
	PrevEnd int64
	// PrevSegment is the segment PrevEnd refers to when PrevEnd > 0: the
	// last one before Segment that held frames. Segments in between held
	// none (empty, or abandoned while their header was being written).
	PrevSegment uint64
	// Torn is the number of bytes that did not form a whole frame in the
	// segments after PrevEnd (a crashed writer's torn tail or torn header).
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
	prevSeg  uint64
	torn     int64
	lastList time.Time
	scratch  []byte
	crcTable *crc32.Table
	walk     *format.Walker
	// endSize is the file's size at the last atEnd; checkedSize the size
	// at which bytes that do not form a frame were last proven torn.
	endSize, checkedSize int64
	// [zeroFrom, zeroTo) of the file was last found all zeros: a
	// preallocated segment's unwritten space (SPEC.md, "Readers", step
	// 3). atZeros says the last parse ended there, at scan.
	zeroFrom, zeroTo int64
	atZeros          bool
	err              error
}

// Partial returns the bytes at the end of the current segment that were
// last found not to form a whole frame, and where they start; 0 if none.
// A Follower waits at them (a write in progress, or a writer that crashed
// and has not started again); callers report a wait that lasts.
func (fl *Follower) Partial() (format.Position, int64) {
	if fl.checkedSize <= fl.scan || fl.err != nil {
		return format.Position{}, 0
	}
	return format.Position{Segment: fl.seg, Offset: fl.scan}, fl.checkedSize - fl.scan
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
	f, err := format.OpenSegment(path)
	if err != nil {
		if errors.Is(err, format.ErrNotRegular) {
			return &format.PositionError{Path: path, Segment: seg, Offset: off, Err: err}
		}
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
	fl.endSize, fl.checkedSize = -1, -1
	fl.zeroFrom, fl.zeroTo, fl.atZeros = -1, -1, false
	fl.acc = Span{}
	fl.walk = format.NewWalker(seg, 0, off == 0)
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
	fl.walk = format.NewWalker(fl.seg, h.Version, fl.pos == 0)
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
				switch state, err := fl.identity(); {
				case err != nil:
					return Span{}, err
				case state == fileGone:
					// Its writer could not finish the header (a full disk)
					// and removed it: the next attempt creates the same
					// number again.
					if err := fl.checkGap(fl.seg); err != nil {
						return Span{}, err
					}
					return fl.empty(), nil
				case state == fileReplaced:
					if err := fl.reopen(); err != nil {
						return Span{}, err
					}
					continue
				}
				moved, err := fl.abandonedHeader()
				if err != nil {
					return Span{}, err
				}
				if !moved {
					return fl.empty(), nil
				}
				continue
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
	s.PrevEnd, s.PrevSegment, s.Torn = fl.prevEnd, 0, 0
	if fl.prevEnd >= 0 {
		s.Torn = fl.torn
	}
	if fl.prevEnd > 0 {
		s.PrevSegment = fl.prevSeg
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
	fl.prevEnd, fl.prevSeg, fl.torn = -1, 0, 0
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
	fl.atZeros = false
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
			info, err := fl.check(f, fl.scan)
			if err != nil {
				return false, err
			}
			if fl.acc.Frames > 0 && (fl.scan+int64(n)-fl.pos > int64(fl.opts.MaxBytes) || fl.acc.Changes+info.Changes > fl.opts.MaxChanges) {
				fl.full = true
				return false, nil
			}
			fl.add(f, info)
			fl.scan += int64(n)
			continue
		}
		if !errors.Is(err, format.ErrTornTail) {
			if zeros(b) {
				switch z, err := fl.zeroTail(); {
				case err != nil:
					return false, err
				case z == zeroEnd:
					return false, nil
				case z == zeroWritten:
					readEOF = false
					continue
				}
			}
			// Not a whole valid frame: torn tail or corruption.
			if err := fl.classify(err, -1); !errors.Is(err, errGrew) {
				return false, err
			}
			fl.dropBuffered()
			readEOF = false
			continue
		}
		if need := format.FrameLen(b); need > fl.opts.MaxBytes {
			if fl.acc.Frames > 0 {
				fl.full = true
				return false, nil
			}
			return fl.bigFrame(need)
		}
		if readEOF {
			if zeros(b) {
				switch z, err := fl.zeroTail(); {
				case err != nil:
					return false, err
				case z == zeroWritten:
					readEOF = false
					continue
				}
			}
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
	// In chunks: a preallocated segment's file holds its reserved space
	// after the data, which a read of the whole buffer would copy at
	// every look.
	n, err := fl.f.ReadAt(fl.buf[fl.hi:min(len(fl.buf), fl.hi+readChunk)], fl.bufOff+int64(fl.hi))
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("tail: reading %s at %d: %w", fl.path, fl.bufOff+int64(fl.hi), err)
	}
	got := fl.buf[fl.hi : fl.hi+n]
	fl.hi += n
	// A preallocated segment's zeros are not data (the backlog metric
	// reads Size).
	k := len(got)
	for k > 0 && got[k-1] == 0 {
		k--
	}
	if end := fl.bufOff + int64(fl.hi-len(got)+k); k > 0 && end > fl.size {
		fl.size = end
	}
	return n > 0, nil
}

// readChunk is the most read reads at once.
const readChunk = 256 << 10

// zeros reports whether b, the bytes at a frame boundary, are all zero: no
// frame starts so (type 0 is no frame type), a preallocated tail may. (Each
// byte equal to the one before it, the first zero: at memcmp speed.)
func zeros(b []byte) bool {
	return len(b) > 0 && b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1])
}

// What zeroTail found after zeros at scan.
type zeroState int

const (
	zeroEnd     zeroState = iota // zeros to the end of the file: no more data yet
	zeroWritten                  // a frame was written at scan since it was read: parse again
	zeroHole                     // zeros, then bytes that are not: classify them
)

// zeroTail is called with zeros at scan. Zeros from there to the end of the
// file are a preallocated segment's unwritten space, neither torn nor
// corrupt: the buffered zeros are dropped so that the next read sees what
// the writer puts there, and atEnd takes the file to end at scan. The space
// is read once; the next look reads only what lies beyond (a writer writes
// at scan first, so what was zeros after it still is while scan is zeros).
func (fl *Follower) zeroTail() (zeroState, error) {
	st, err := fl.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	from := fl.scan
	if fl.zeroFrom >= 0 && fl.zeroFrom <= fl.scan && fl.scan < fl.zeroTo {
		from = fl.zeroTo
	}
	at, err := format.NextNonZero(fl.f, from, st.Size())
	if err != nil {
		return 0, fmt.Errorf("tail: %s: %w", fl.path, err)
	}
	if at < 0 {
		fl.zeroFrom, fl.zeroTo = fl.scan, max(st.Size(), fl.scan)
		fl.dropBuffered()
		fl.atZeros = true
		return zeroEnd, nil
	}
	// Our copy of a page may precede the writer's while our copy of a
	// later page follows it: look at scan again.
	var h [format.FrameHeaderLen]byte
	n, _ := fl.f.ReadAt(h[:], fl.scan)
	if !zeros(h[:n]) {
		fl.dropBuffered()
		return zeroWritten, nil
	}
	return zeroHole, nil
}

// dropBuffered forgets the bytes buffered after scan (they were zeros, or a
// write in progress), so that the next read takes them from the file again.
func (fl *Follower) dropBuffered() {
	fl.hi = int(fl.scan - fl.bufOff)
	fl.size = fl.scan
}

// check validates a whole frame at off (format.Walker: its type, where it
// may appear) without counting it; add takes it.
func (fl *Follower) check(f format.Frame, off int64) (format.FrameInfo, error) {
	return fl.checkPrefix(f.Type, f.Payload, len(f.Payload), off)
}

func (fl *Follower) checkPrefix(t format.FrameType, prefix []byte, n int, off int64) (format.FrameInfo, error) {
	info, err := fl.walk.CheckPrefix(t, prefix, n)
	if err != nil {
		return info, fl.fail(off, err)
	}
	return info, nil
}

func (fl *Follower) add(f format.Frame, info format.FrameInfo) {
	fl.walk.Add(info)
	if info.Seal != nil {
		fl.sealNext = info.Seal.Next
	}
	fl.acc.Frames++
	fl.acc.Changes += info.Changes
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
	if st.Size() < end {
		return false, nil // still being written, or a torn tail: atEnd decides
	}
	// Not the file's size: a preallocated segment's is its reserved space.
	fl.size = max(fl.size, end)
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
		return false, fl.classify(fmt.Errorf("%w: frame crc %08x, computed %08x", format.ErrChecksum, want, crc), -1)
	}
	f := format.Frame{Type: typ, Payload: head}
	info, err := fl.checkPrefix(typ, head, n-format.FrameHeaderLen, fl.scan)
	if err != nil {
		return false, err
	}
	fl.add(f, info)
	fl.scan = end
	fl.full = true
	return true, nil
}

// classify decides what the bytes at scan, which are not a whole valid
// frame (why), are: corruption if a valid frame starts anywhere after them
// up to the file's current end, else a torn tail (a write in progress, or a
// crashed writer's last frame), which is not an error here: atEnd decides
// once the writer has moved on. The file is scanned in place in bounded
// windows (format.FindFrame), never buffered.
//
// size is the file's size the caller found stable (-1: a frame whole on
// disk failed its checks, the current size is used). If the file has grown
// since, the bytes were a write in progress after all (their frame may be
// whole now, with the next one after it): nothing is decided (errGrew),
// and the caller reads again. The scan stops at size, so a frame found after scan
// was all on disk while the frame at scan was not whole.
func (fl *Follower) classify(why error, size int64) error {
	st, err := fl.f.Stat()
	if err != nil {
		return fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	if size < 0 {
		size = st.Size()
	} else if st.Size() != size {
		return errGrew
	}
	at, err := format.FindFrame(fl.f, fl.scan+1, size)
	switch {
	case errors.Is(err, format.ErrScanLimit):
		return fl.fail(fl.scan, fmt.Errorf("%w; %v", why, err))
	case err != nil:
		return fmt.Errorf("tail: %s: %w", fl.path, err)
	case at >= 0:
		// Bytes written in place (a preallocated segment) change without
		// the size: the frame at scan may have been a write in progress
		// that is whole now. Once a later frame is whole, an earlier one
		// is too, so one more look at scan decides.
		if ok, ferr := format.FrameAt(fl.f, fl.scan, size); ferr == nil && ok {
			return errGrew
		}
		return fl.fail(fl.scan, fmt.Errorf("%w; a valid frame starts at offset %d: the damage is in the middle of the segment, not a torn tail", why, at))
	}
	fl.checkedSize = st.Size()
	return nil
}

// atEnd is called when no whole frame follows scan. It moves on to the next
// segment when the current one is sealed or abandoned, and reports whether
// it did.
func (fl *Follower) atEnd() (bool, error) {
	st, err := fl.f.Stat()
	if err != nil {
		return false, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	size := st.Size()
	if fl.atZeros && !fl.sealed && fl.zeroTo >= size {
		size = fl.scan // the rest is preallocated space, all zeros: no data
	}
	if size < fl.size || size < fl.scan {
		return false, fl.fail(size, fmt.Errorf("%w: from %d to %d bytes (shipped up to %d); segments are append-only: restore the file or move the source's files away",
			ErrShrunk, max(fl.size, fl.scan), size, fl.pos))
	}
	grew := size > fl.size
	fl.size = size
	if fl.sealed {
		if size > fl.scan {
			return false, fl.fail(fl.scan, fmt.Errorf("%w: %d bytes after the seal frame", format.ErrCorrupt, size-fl.scan))
		}
		return fl.moveOn(fl.sealNext, 0, false)
	}
	if grew {
		return true, nil // more bytes arrived since we read: parse them first
	}
	stable := size == fl.endSize
	fl.endSize = size
	if rest := size - fl.scan; rest > 0 && stable && fl.checkedSize != size {
		// Bytes that do not form a whole frame, and the file did not grow
		// since the last look: a writer that crashed in the middle of a
		// frame, or a corrupt length field with valid frames after it.
		// The latter must stop the source now, not when a later segment
		// appears (which may be never).
		if err := fl.classify(fmt.Errorf("%w: %d bytes at the end of the segment that are not a whole frame (the length field says %d)",
			format.ErrCorrupt, rest, fl.frameLenAt(fl.scan)), st.Size()); err != nil {
			if errors.Is(err, errGrew) {
				return true, nil
			}
			return false, err
		}
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
	if rest := size - fl.scan; rest > 0 && fl.checkedSize != size {
		if err := fl.classify(fmt.Errorf("%w: %d bytes at the end of an abandoned segment that are not a whole frame", format.ErrCorrupt, rest), size); err != nil {
			if errors.Is(err, errGrew) {
				return true, nil // never abandon bytes that arrived meanwhile
			}
			return false, err
		}
	}
	// A preallocated segment's space after its torn bytes is not torn.
	end, err := format.DataEnd(fl.f, fl.scan, size)
	if err != nil {
		return false, fmt.Errorf("tail: %s: %w", fl.path, err)
	}
	return fl.moveOn(next, end-fl.scan, fl.scan == fl.hdrLen)
}

// errGrew tells atEnd that the file grew while it classified its end: the
// new bytes are read first (they may complete the frame), nothing decided.
var errGrew = errors.New("tail: segment grew while classifying its end")

// frameLenAt returns the payload length the frame header at off claims, or
// -1 if the header is not all there.
func (fl *Follower) frameLenAt(off int64) int64 {
	var h [format.FrameHeaderLen]byte
	if _, err := fl.f.ReadAt(h[:], off); err != nil {
		return -1
	}
	return int64(binary.LittleEndian.Uint32(h[:]))
}

// moveOn opens segment next, recording where the current one ended.
// frameless says the current segment held no frame at all (empty, or its
// header torn): the next segment's PrevEnd then still refers to the last
// segment that held frames (or is 0, the chain's start), so that a receiver
// continues from what it applied, and the torn bytes add up.
func (fl *Follower) moveOn(next uint64, torn int64, frameless bool) (bool, error) {
	path := filepath.Join(fl.dir, format.SegmentName(fl.source, next))
	if _, err := os.Lstat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fl.checkGap(next)
		}
		return false, fmt.Errorf("tail: stat %s: %w", path, err)
	}
	prevEnd, prevSeg, prevTorn := fl.scan, fl.seg, int64(0)
	if frameless && fl.prevEnd >= 0 {
		prevEnd, prevSeg, prevTorn = fl.prevEnd, fl.prevSeg, fl.torn
	}
	if err := fl.openSegment(next, 0); err != nil {
		if errors.Is(err, ErrMissing) {
			// Removed between the look and the open: a writer that could
			// not write its header. Stay; the next Fill looks again.
			return false, nil
		}
		return false, err
	}
	fl.prevEnd, fl.prevSeg, fl.torn = prevEnd, prevSeg, prevTorn+torn
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

// abandonedHeader is called while the current segment's header is not
// complete. While it is the newest segment its writer may be creating it:
// wait. Once a later segment exists it was abandoned at birth (its writer
// crashed while writing the header): it holds no frame, its bytes are
// reported as torn, and the Follower moves on (SPEC.md, "Readers", step 4).
func (fl *Follower) abandonedHeader() (bool, error) {
	next := fl.seg + 1
	if _, err := os.Lstat(filepath.Join(fl.dir, format.SegmentName(fl.source, next))); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fl.checkGap(next)
		}
		return false, fmt.Errorf("tail: stat next segment: %w", err)
	}
	if fl.pos > 0 {
		return false, fl.fail(0, fmt.Errorf("%w: header incomplete although the shipper was positioned at offset %d of the segment; the file changed under it", format.ErrCorrupt, fl.pos))
	}
	st, err := fl.f.Stat()
	if err != nil {
		return false, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	return fl.moveOn(next, st.Size(), true)
}

// The states of the current segment's path, as identity finds it.
const (
	fileSame = iota
	fileGone
	fileReplaced
)

// identity reports whether the current segment's path still names the file
// the Follower has open. Only a segment whose header is incomplete can be
// removed or replaced: the writer removes a segment whose header it could
// not write and creates the same number again (format.Writer).
func (fl *Follower) identity() (int, error) {
	at, err := os.Stat(fl.path)
	if errors.Is(err, os.ErrNotExist) {
		return fileGone, nil
	}
	if err != nil {
		return 0, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	open, err := fl.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("tail: stat %s: %w", fl.path, err)
	}
	if os.SameFile(at, open) {
		return fileSame, nil
	}
	return fileReplaced, nil
}

// reopen opens the current segment's path again, keeping where the previous
// segment ended: the file there was created anew.
func (fl *Follower) reopen() error {
	prevEnd, prevSeg, torn := fl.prevEnd, fl.prevSeg, fl.torn
	if err := fl.openSegment(fl.seg, fl.pos); err != nil {
		if errors.Is(err, ErrMissing) {
			return nil // removed again: the next Fill looks again
		}
		return err
	}
	fl.prevEnd, fl.prevSeg, fl.torn = prevEnd, prevSeg, torn
	return nil
}
