// Package wire defines how the shipper carries change frames over NATS
// JetStream and how receivers read them back: one message is a byte range of
// whole frames of one segment, compressed, described by headers. The
// protocol is specified in ../SPEC.md ("Wire batches"); this package is its
// only implementation, shared by shipper and receiver.
//
// Frames are carried as written (no re-encoding), so their CRCs travel end to
// end and receivers verify them again. A frame larger than one message is
// split into parts, sent in order, which a receiver joins before applying.
//
// What the shipper (package shipper) promises about the messages of one
// source, on subject "<prefix>.<source>":
//   - Ranges are whole frames, in file order: within a segment the next
//     message's From is the previous message's To; every part of a split
//     frame carries the same From and To (the frame's whole range), parts
//     are published in order 0..Parts-1, and part i decompresses to the
//     i-th consecutive slice of the frame's bytes, so the parts' raw bodies
//     concatenated are exactly the bytes [From, To). Frames and Changes
//     count the whole frame on every part.
//   - Heartbeat and seal frames travel inside ranges like any frame.
//   - The first message of each segment carries PrevEnd (see Batch); when
//     that message is a split frame, every part carries it, and Torn is on
//     part 0 only. The previous segment is always Segment-1: a gap in the
//     chain stops the shipper. PrevEnd 0 means no earlier segment was shipped for the
//     source (the chain starts here).
//   - A segment that holds no frame at all (a writer crashed right after
//     creating it, or while writing its header) produces no message; the
//     next segment's PrevEnd then still refers to the last segment that
//     held frames, named by PrevSegment (or is 0 if none did: the chain
//     starts there).
//   - The same range is always published with the same Nats-Msg-Id
//     (MsgID), so a retry inside the stream's duplicate window is dropped
//     by the server. Outside the window, and when a broker lost acknowledged
//     messages and the shipper re-ships from the stream's real tail, the
//     stream may hold a range twice: receivers skip frames they already
//     applied by position.
//   - In the rare case that the stream stored a message after one it
//     rejected, or a restarted server stored one after acknowledged
//     messages it lost (a hole), the shipper re-ships from the hole with a
//     Repair number (see Batch.Repair): receivers must wait at a range
//     that starts beyond their position rather than fail.
//   - A split frame may be cut short if the shipper restarts in the middle
//     of it: it re-sends the frame from part 0. A receiver that sees part 0
//     of a frame again drops the parts it holds and starts over.
package wire

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/ferrysync/ferry/format"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Header names. They are part of the wire protocol and must not change.
const (
	HdrMsgID       = "Nats-Msg-Id"
	HdrVersion     = "Ferry-Version"
	HdrSource      = "Ferry-Source"
	HdrSegment     = "Ferry-Segment"
	HdrFrom        = "Ferry-From"
	HdrTo          = "Ferry-To"
	HdrFrames      = "Ferry-Frames"
	HdrChanges     = "Ferry-Changes"
	HdrFirstCommit = "Ferry-First-Commit"
	HdrLastCommit  = "Ferry-Last-Commit"
	HdrCodec       = "Ferry-Codec"
	HdrRawLen      = "Ferry-Raw-Len"
	HdrPart        = "Ferry-Part"
	HdrParts       = "Ferry-Parts"
	HdrPrevEnd     = "Ferry-Prev-End"
	HdrPrevSegment = "Ferry-Prev-Segment"
	HdrTorn        = "Ferry-Torn"
	HdrRepair      = "Ferry-Repair"
)

// Version is the wire protocol version.
const Version = 1

// MaxRawLen bounds the decompressed size of one message: a receiver refuses
// to inflate more, whatever the headers claim.
const MaxRawLen = 64 << 20

// Codec names a compression of message bodies.
type Codec uint8

// Codecs.
const (
	CodecNone Codec = iota
	CodecZstd
	CodecS2
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	}
	return "codec(" + strconv.Itoa(int(c)) + ")"
}

// ParseCodec parses "none", "zstd" or "s2".
func ParseCodec(s string) (Codec, error) {
	switch s {
	case "none":
		return CodecNone, nil
	case "zstd":
		return CodecZstd, nil
	case "s2":
		return CodecS2, nil
	}
	return 0, fmt.Errorf("wire: unknown codec %q (want zstd, s2 or none)", s)
}

// Errors.
var (
	// ErrHeader means a message whose Ferry headers are missing or invalid.
	ErrHeader = errors.New("wire: invalid message headers")
	// ErrBody means a body that does not decompress to what the headers say.
	ErrBody = errors.New("wire: invalid message body")
)

// Batch describes one message: the frames of segment Segment in the byte
// range [From, To), or, for a frame split into parts, part Part of Parts of
// the frame that starts at From and ends at To.
type Batch struct {
	Source  string
	Segment uint64
	From    int64
	To      int64
	// Frames and Changes count the frames and changes in the range; for a
	// split frame they count the whole frame on every part.
	Frames  int
	Changes int
	// FirstCommit and LastCommit are the first and last frame times in the
	// range, Unix nanoseconds (0 if none).
	FirstCommit int64
	LastCommit  int64
	Codec       Codec
	// RawLen is the body's size once decompressed.
	RawLen int
	// Part counts from 0; Parts is 1 for an unsplit batch.
	Part  int
	Parts int
	// PrevEnd is set (>= 0) on the first message of a segment: where the
	// shipper found the previous segment to end. A receiver moves on to this
	// segment only from exactly there. -1 otherwise.
	PrevEnd int64
	// PrevSegment is the segment PrevEnd refers to when it is not
	// Segment-1 (0 then): the segments in between held no frame (empty, or
	// abandoned while their header was written) and produced no message.
	// Only with PrevEnd > 0.
	PrevSegment uint64
	// Torn is the number of torn bytes the shipper found after PrevEnd in
	// the previous segment (a crashed writer), reported, never shipped.
	Torn int64
	// Repair is 0 normally. A shipper that found a hole in the stream (a
	// message rejected while a later one was stored, so the stream holds
	// ranges out of order) re-ships from the hole with Repair set to a
	// number unique to that attempt: it changes the message id, so the
	// server does not drop the re-shipped ranges as duplicates of the copies
	// stored out of order. Receivers treat a repaired range like any other
	// (skip what they applied, apply from their position); they must not
	// fail on a range that starts beyond their position, because a repair
	// follows it.
	Repair uint64
}

// Whole reports whether the message completes its range: an unsplit
// message, or the last part of a split frame.
func (b *Batch) Whole() bool { return b.Parts <= 1 || b.Part == b.Parts-1 }

// End returns the position up to which the source is shipped once this
// message is stored: the end of its range if it is Whole, else the start of
// the split frame it is a part of (a frame counts only with its last part).
func (b *Batch) End() format.Position {
	if b.Whole() {
		return format.Position{Segment: b.Segment, Offset: b.To}
	}
	return format.Position{Segment: b.Segment, Offset: b.From}
}

// Prev returns the position PrevEnd names — the segment it refers to and
// the offset — and whether the message carries one (PrevEnd > 0; PrevEnd 0
// starts the chain).
func (b *Batch) Prev() (format.Position, bool) {
	if b.PrevEnd <= 0 {
		return format.Position{}, false
	}
	seg := b.Segment - 1
	if b.PrevSegment > 0 {
		seg = b.PrevSegment
	}
	return format.Position{Segment: seg, Offset: b.PrevEnd}, true
}

// MsgID returns the message's JetStream de-duplication id, derived from its
// position so that a re-publish of the same range is dropped by the server.
func (b *Batch) MsgID() string {
	id := b.Source + ":" + strconv.FormatUint(b.Segment, 10) + ":" + strconv.FormatInt(b.From, 10)
	if b.Parts > 1 {
		id += ":" + strconv.Itoa(b.Part)
	}
	if b.Repair > 0 {
		id += ":r" + strconv.FormatUint(b.Repair, 10)
	}
	return id
}

// Header returns the message headers describing b, Nats-Msg-Id included.
func (b *Batch) Header() map[string][]string {
	h := map[string][]string{
		HdrMsgID:       {b.MsgID()},
		HdrVersion:     {strconv.Itoa(Version)},
		HdrSource:      {b.Source},
		HdrSegment:     {strconv.FormatUint(b.Segment, 10)},
		HdrFrom:        {strconv.FormatInt(b.From, 10)},
		HdrTo:          {strconv.FormatInt(b.To, 10)},
		HdrFrames:      {strconv.Itoa(b.Frames)},
		HdrChanges:     {strconv.Itoa(b.Changes)},
		HdrFirstCommit: {strconv.FormatInt(b.FirstCommit, 10)},
		HdrLastCommit:  {strconv.FormatInt(b.LastCommit, 10)},
		HdrCodec:       {b.Codec.String()},
		HdrRawLen:      {strconv.Itoa(b.RawLen)},
	}
	if b.Parts > 1 {
		h[HdrPart] = []string{strconv.Itoa(b.Part)}
		h[HdrParts] = []string{strconv.Itoa(b.Parts)}
	}
	if b.PrevEnd >= 0 {
		h[HdrPrevEnd] = []string{strconv.FormatInt(b.PrevEnd, 10)}
	}
	if b.PrevEnd > 0 && b.PrevSegment > 0 && b.PrevSegment != b.Segment-1 {
		h[HdrPrevSegment] = []string{strconv.FormatUint(b.PrevSegment, 10)}
	}
	if b.Torn > 0 {
		h[HdrTorn] = []string{strconv.FormatInt(b.Torn, 10)}
	}
	if b.Repair > 0 {
		h[HdrRepair] = []string{strconv.FormatUint(b.Repair, 10)}
	}
	return h
}

// ParseHeader reads a Batch back from message headers, checking that every
// field is present and consistent.
func ParseHeader(h map[string][]string) (Batch, error) {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var err error
	bad := func(k, why string) {
		if err == nil {
			err = fmt.Errorf("%w: %s %q: %s", ErrHeader, k, get(k), why)
		}
	}
	num := func(k string, optional bool, def int64) int64 {
		s := get(k)
		if s == "" && optional {
			return def
		}
		v, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || v < 0 {
			bad(k, "want a non-negative integer")
		}
		return v
	}
	if v := get(HdrVersion); v != strconv.Itoa(Version) {
		return Batch{}, fmt.Errorf("%w: %s %q, this build reads %d", ErrHeader, HdrVersion, v, Version)
	}
	b := Batch{Source: get(HdrSource)}
	if !format.ValidSource(b.Source) {
		bad(HdrSource, "not a valid source name")
	}
	seg, perr := strconv.ParseUint(get(HdrSegment), 10, 64)
	if perr != nil {
		bad(HdrSegment, "want an unsigned integer")
	}
	b.Segment = seg
	b.From, b.To = num(HdrFrom, false, 0), num(HdrTo, false, 0)
	b.Frames, b.Changes = int(num(HdrFrames, false, 0)), int(num(HdrChanges, false, 0))
	b.FirstCommit, b.LastCommit = num(HdrFirstCommit, false, 0), num(HdrLastCommit, false, 0)
	b.RawLen = int(num(HdrRawLen, false, 0))
	b.Part, b.Parts = int(num(HdrPart, true, 0)), int(num(HdrParts, true, 1))
	b.PrevEnd = num(HdrPrevEnd, true, -1)
	b.Torn = num(HdrTorn, true, 0)
	if p := get(HdrPrevSegment); p != "" {
		v, perr := strconv.ParseUint(p, 10, 64)
		if perr != nil || v == 0 || v+1 >= b.Segment || b.PrevEnd <= 0 {
			bad(HdrPrevSegment, "want a segment before Segment-1, with a positive Ferry-Prev-End")
		}
		b.PrevSegment = v
	}
	if r := get(HdrRepair); r != "" {
		v, perr := strconv.ParseUint(r, 10, 64)
		if perr != nil || v == 0 {
			bad(HdrRepair, "want a positive integer")
		}
		b.Repair = v
	}
	if c, cerr := ParseCodec(get(HdrCodec)); cerr != nil {
		bad(HdrCodec, "unknown codec")
	} else {
		b.Codec = c
	}
	if err != nil {
		return Batch{}, err
	}
	switch {
	case b.To <= b.From:
		return Batch{}, fmt.Errorf("%w: empty or inverted range [%d, %d)", ErrHeader, b.From, b.To)
	case b.Parts < 1 || b.Part >= b.Parts:
		return Batch{}, fmt.Errorf("%w: part %d of %d", ErrHeader, b.Part, b.Parts)
	case b.RawLen > MaxRawLen:
		return Batch{}, fmt.Errorf("%w: raw length %d over limit %d", ErrHeader, b.RawLen, MaxRawLen)
	case b.Parts == 1 && int64(b.RawLen) != b.To-b.From:
		return Batch{}, fmt.Errorf("%w: raw length %d for range [%d, %d)", ErrHeader, b.RawLen, b.From, b.To)
	}
	if id := get(HdrMsgID); id != "" && id != b.MsgID() {
		return Batch{}, fmt.Errorf("%w: %s %q does not match the batch (%q)", ErrHeader, HdrMsgID, id, b.MsgID())
	}
	return b, nil
}

// Compressor compresses message bodies. It is safe for concurrent use; keep
// one per process.
type Compressor struct {
	zenc *zstd.Encoder
}

// NewCompressor returns a Compressor using the given zstd level.
func NewCompressor(level zstd.EncoderLevel) (*Compressor, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("wire: creating zstd encoder: %w", err)
	}
	return &Compressor{zenc: enc}, nil
}

// Compress appends raw, compressed with c, to dst.
func (z *Compressor) Compress(dst, raw []byte, c Codec) ([]byte, error) {
	switch c {
	case CodecNone:
		return append(dst, raw...), nil
	case CodecZstd:
		return z.zenc.EncodeAll(raw, dst), nil
	case CodecS2:
		// s2.Encode writes from the start of its dst: give it the free tail.
		n := s2.MaxEncodedLen(len(raw))
		if cap(dst)-len(dst) < n {
			nd := make([]byte, len(dst), len(dst)+n)
			copy(nd, dst)
			dst = nd
		}
		out := s2.Encode(dst[len(dst):len(dst)+n], raw)
		return dst[:len(dst)+len(out)], nil
	}
	return dst, fmt.Errorf("wire: unknown codec %d", c)
}

// Decompressor inflates message bodies without trusting them: it never
// produces more than the message's RawLen (itself bounded by MaxRawLen). It
// is safe for concurrent use.
type Decompressor struct {
	zdec *zstd.Decoder
}

// NewDecompressor returns a Decompressor.
func NewDecompressor() (*Decompressor, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxRawLen), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, fmt.Errorf("wire: creating zstd decoder: %w", err)
	}
	return &Decompressor{zdec: dec}, nil
}

// Decompress appends the raw bytes of body, described by b, to dst[:0] and
// returns them. The result must be exactly b.RawLen bytes.
func (d *Decompressor) Decompress(dst, body []byte, b *Batch) ([]byte, error) {
	return d.Inflate(dst, body, b.Codec, b.RawLen, b.MsgID())
}

// Inflate is Decompress for any message body compressed like a batch (the
// initial load's messages are, package format/load): it decodes body with
// codec into dst[:0], refusing to produce anything but exactly rawLen bytes
// (at most MaxRawLen). what names the message in errors.
func (d *Decompressor) Inflate(dst, body []byte, codec Codec, rawLen int, what string) ([]byte, error) {
	if rawLen > MaxRawLen || rawLen < 0 {
		return nil, fmt.Errorf("%w: %s: raw length %d over limit %d", ErrBody, what, rawLen, MaxRawLen)
	}
	if cap(dst) < rawLen {
		dst = make([]byte, 0, rawLen)
	}
	dst = dst[:0:rawLen]
	var out []byte
	var err error
	switch codec {
	case CodecNone:
		if len(body) != rawLen {
			return nil, fmt.Errorf("%w: %s: body of %d bytes, headers say %d", ErrBody, what, len(body), rawLen)
		}
		out = append(dst, body...)
	case CodecZstd:
		out, err = d.zdec.DecodeAll(body, dst)
	case CodecS2:
		n, lerr := s2.DecodedLen(body)
		if lerr != nil || n != rawLen {
			return nil, fmt.Errorf("%w: %s: s2 body decodes to %d bytes, headers say %d (%v)", ErrBody, what, n, rawLen, lerr)
		}
		out, err = s2.Decode(dst[:rawLen], body)
	default:
		return nil, fmt.Errorf("%w: %s: unknown codec %d", ErrBody, what, codec)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBody, what, err)
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("%w: %s: body decodes to %d bytes, headers say %d", ErrBody, what, len(out), rawLen)
	}
	return out, nil
}

// Close releases the decoder's resources.
func (d *Decompressor) Close() { d.zdec.Close() }
