// Package format defines Ferry's change files: the segment files a legacy
// application appends its data changes to, and the frames inside them.
//
// The byte-level specification, for writers in any language, is SPEC.md in
// this directory; this comment summarises it and the code follows it.
//
// A source writes a chain of segment files named <source>-<segment>.ferry
// (segment in 20 decimal digits). Each segment starts with a header
//
//	| magic "FERRYSEG" (8) | version u16 | header len u16 | flags u32 |
//	| segment u64 | created i64 (unix ns) | source len u8 | source | CRC32C u32 |
//
// followed by frames
//
//	| length u32 | CRC32C u32 | type u8 | payload (length bytes) |
//
// where the CRC (Castagnoli) covers the type byte and the payload. All
// fixed-width integers are little endian; variable lengths inside payloads
// are unsigned LEB128 varints. A transaction is one frame, written with one
// write, so a frame is either whole or a torn tail. A segment ends with a
// seal frame naming the next segment; a writer that crashed leaves a segment
// without a seal, possibly with a torn last frame, and starts a new segment
// when it restarts. One writer per source, enforced by a lock on
// <source>.lock in the directory.
//
// Bytes at a frame boundary that do not form a valid frame are a torn tail
// (ErrTornTail: wait, or drop them if the segment was abandoned) when no
// valid frame follows them, and corruption (ErrChecksum, ErrCorrupt: stop)
// when one does. Every reader of frames checks them by one set of rules,
// Walker's; Verifier checks whole chains of segments (ferry inspect
// --verify).
//
// Format version 2 adds the order contract (SPEC.md, "Commit order"): a
// transaction appended before the database's COMMIT, while it holds its
// locks, is marked prepared (Writer.Prepare) and counts as committed only
// once an outcome frame says so; changes may carry the legacy's row version
// so that several writers of one row merge to the database's state; a
// restarted writer finds in-doubt transactions from the newest segment's low
// watermark.
//
// The constants in this package are part of the on-disk format and must not
// change.
package format

import (
	"errors"
	"fmt"
	"hash/crc32"
)

// Magic opens every segment file.
const Magic = "FERRYSEG"

// Version is the segment format version this package writes. It reads
// every version from MinVersion to Version (SPEC.md, "Versioning and
// compatibility"): version 2 added prepared transactions, outcome frames,
// row versions and the header's low watermark (SPEC.md, "Commit order").
const Version = 2

// MinVersion is the oldest segment format version this package reads.
const MinVersion = 1

// Sizes and limits of the format.
const (
	// FrameHeaderLen is the size of a frame's length, CRC and type.
	FrameHeaderLen = 9
	// MinHeaderLen is the size of a version 1 segment header with an empty
	// source; HeaderLen gives a header's size by version.
	MinHeaderLen = 37
	// lowWatermarkLen is the size of the version 2 header's low watermark.
	lowWatermarkLen = 16
	// MaxHeaderLen bounds a segment header of any version.
	MaxHeaderLen = MinHeaderLen + 255
	// MaxFrameLen bounds a frame's payload: larger lengths are corruption.
	MaxFrameLen = 1 << 30
	// MaxSourceLen bounds a source name.
	MaxSourceLen = 64
	// MaxTableLen bounds a table name.
	MaxTableLen = 1024
	// MaxKeyLen bounds a key.
	MaxKeyLen = 64 << 10
	// MaxIDLen bounds a transaction id and an origin.
	MaxIDLen = 1024
)

// FrameType says what a frame's payload holds.
type FrameType uint8

// Frame types. Types with the high bit set (128–255) are optional: a reader
// that does not know one skips it. An unknown type below 128 is an error.
const (
	FrameTx        FrameType = 1
	FrameSeal      FrameType = 2
	FrameHeartbeat FrameType = 3
	// FrameOutcome records whether prepared transactions committed or
	// aborted (format version 2).
	FrameOutcome FrameType = 4
	// FrameRejection records that the legacy refused a write-back command
	// (format version 2).
	FrameRejection FrameType = 5
	// FrameApplied records again the outcome of a write-back command the
	// legacy carried out at an earlier delivery (an optional type: readers
	// that do not know it skip it, receivers keep the first outcome).
	FrameApplied FrameType = 128
)

func (t FrameType) String() string {
	switch t {
	case FrameTx:
		return "tx"
	case FrameSeal:
		return "seal"
	case FrameHeartbeat:
		return "heartbeat"
	case FrameOutcome:
		return "outcome"
	case FrameRejection:
		return "rejection"
	case FrameApplied:
		return "applied"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Skippable reports whether a reader that does not know t may skip it.
func (t FrameType) Skippable() bool { return t >= 128 }

// KnownIn reports whether a frame of type t may appear in a segment of
// format version v: the types of that version and the optional ones.
// Anything else is corruption.
func (t FrameType) KnownIn(v uint16) bool {
	switch t {
	case FrameTx, FrameSeal, FrameHeartbeat:
		return true
	case FrameOutcome, FrameRejection:
		return v >= 2
	}
	return t.Skippable()
}

// PlausibleLen reports whether a payload of n bytes can be a frame of type
// t: the fixed sizes of seal and heartbeat, the minimum of a transaction and
// of an outcome. Scans for the next valid frame use it to skip most
// candidates before computing a CRC.
func (t FrameType) PlausibleLen(n int) bool {
	switch t {
	case FrameTx:
		return n >= minTxLen
	case FrameSeal:
		return n == sealLen
	case FrameHeartbeat:
		return n == 8
	case FrameOutcome:
		return n >= minOutcomeLen
	case FrameRejection:
		return n >= minRejectionLen
	case FrameApplied:
		return n >= minAppliedLen
	}
	return true
}

// Op is the kind of a change.
type Op uint8

// Change operations.
const (
	OpInsert Op = 1
	OpUpdate Op = 2
	OpUpsert Op = 3
	OpDelete Op = 4
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpUpsert:
		return "upsert"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// ParseOp parses the names String returns.
func ParseOp(s string) (Op, error) {
	switch s {
	case "insert":
		return OpInsert, nil
	case "update":
		return OpUpdate, nil
	case "upsert":
		return OpUpsert, nil
	case "delete":
		return OpDelete, nil
	}
	return 0, fmt.Errorf("format: unknown op %q (want insert, update, upsert or delete)", s)
}

// ContentType says how to read a change's images.
type ContentType uint8

// Content types of images.
const (
	ContentJSON   ContentType = 1 // UTF-8 JSON document
	ContentBinary ContentType = 2 // opaque bytes
	ContentText   ContentType = 3 // UTF-8 text
)

func (c ContentType) String() string {
	switch c {
	case ContentJSON:
		return "json"
	case ContentBinary:
		return "binary"
	case ContentText:
		return "text"
	}
	return fmt.Sprintf("content(%d)", uint8(c))
}

// MIME returns the media type of c.
func (c ContentType) MIME() string {
	switch c {
	case ContentJSON:
		return "application/json"
	case ContentText:
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// Errors. Readers wrap them with where they happened (see *PositionError),
// so test for them with errors.Is.
var (
	// ErrTornTail means the bytes after the last whole frame do not form a
	// whole valid frame and nothing valid follows them: a writer stopped in
	// the middle of a write. In a segment that is still being written it
	// means "wait for more"; in an abandoned one it is the end.
	ErrTornTail = errors.New("format: torn tail")
	// ErrChecksum means a frame or header failed its CRC with data after it:
	// corruption in the middle of a segment.
	ErrChecksum = errors.New("format: checksum mismatch")
	// ErrCorrupt means bytes that cannot be a valid frame or payload.
	ErrCorrupt = errors.New("format: corrupt data")
	// ErrBadMagic means a file that is not a Ferry segment.
	ErrBadMagic = errors.New("format: not a ferry segment (bad magic)")
	// ErrVersion means a segment written by a newer, incompatible format.
	ErrVersion = errors.New("format: unsupported format version")
	// ErrTooLarge means a value over one of the format's limits.
	ErrTooLarge = errors.New("format: value over limit")
	// ErrInvalid means a transaction or header that may not be encoded.
	ErrInvalid = errors.New("format: invalid value")
	// ErrClosed is returned by a closed Writer.
	ErrClosed = errors.New("format: writer closed")
)

// PositionError says where in which segment a reader failed.
type PositionError struct {
	Path    string // file, when known
	Segment uint64
	Offset  int64 // byte offset of the frame (or header field) that failed
	Err     error // one of the sentinel errors above, possibly wrapped
}

func (e *PositionError) Error() string {
	where := e.Path
	if where == "" {
		where = fmt.Sprintf("segment %d", e.Segment)
	}
	return fmt.Sprintf("%s: offset %d: %v", where, e.Offset, e.Err)
}

func (e *PositionError) Unwrap() error { return e.Err }

// Position is a byte position in a source's chain of segments.
type Position struct {
	Segment uint64
	Offset  int64
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	if p.Segment != q.Segment {
		return p.Segment < q.Segment
	}
	return p.Offset < q.Offset
}

func (p Position) String() string { return fmt.Sprintf("%d:%d", p.Segment, p.Offset) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC32C (Castagnoli) of b, as the format uses it.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ReservedSource is the one name no source may take: subjects
// "<prefix>.load.<table>" of the change stream carry initial loads (SPEC.md,
// "Initial load"), so a source called "load" would share their subjects.
const ReservedSource = "load"

// ValidSource reports whether s may name a source: 1 to MaxSourceLen bytes of
// ASCII letters, digits, '_' and '-', so that it is also one NATS subject
// token and a portable file name prefix, and not ReservedSource. CheckSource
// says why a name is refused.
func ValidSource(s string) bool { return CheckSource(s) == nil }

// CheckSource returns nil if s may name a source, else an error (wrapping
// ErrInvalid) that says what is wrong with it and what a name must be.
func CheckSource(s string) error {
	if s == ReservedSource {
		return fmt.Errorf("%w: source name %q is reserved: subjects <prefix>.%s.<table> carry initial loads (choose another name)", ErrInvalid, s, ReservedSource)
	}
	ok := len(s) > 0 && len(s) <= MaxSourceLen
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: source name %q (want 1-%d of [A-Za-z0-9_-])", ErrInvalid, s, MaxSourceLen)
	}
	return nil
}
