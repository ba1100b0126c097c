package format

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// SegmentHeader opens every segment file.
type SegmentHeader struct {
	// Version is the segment's format version; AppendHeader writes Version
	// when it is 0.
	Version uint16
	Source  string
	Segment uint64
	// Created is when the writer created the segment, in Unix nanoseconds.
	Created int64
	// LowWatermark (version 2) is the position of the oldest prepared
	// transaction of the source whose outcome was not in the files when
	// the segment was created, or the zero Position if there was none: a
	// writer that restarts looks for in-doubt transactions from there
	// (SPEC.md, "Commit order").
	LowWatermark Position
	// Len is the header's size on disk: the offset of the first frame.
	Len int
}

// HeaderLen returns the size of the segment header a writer of format
// version v writes for source (version 1: 37 + source length; version 2
// adds the 16-byte low watermark). It is also where the first frame of such
// a segment starts, and where a segment without frames ends.
func HeaderLen(v uint16, source string) int {
	if v >= 2 {
		return MinHeaderLen + lowWatermarkLen + len(source)
	}
	return MinHeaderLen + len(source)
}

// AppendHeader validates h and appends its encoding to dst at h.Version
// (Version if 0); h.Len is ignored.
func AppendHeader(dst []byte, h SegmentHeader) ([]byte, error) {
	if !ValidSource(h.Source) {
		return dst, fmt.Errorf("%w: source name %q (want 1-%d of [A-Za-z0-9_-])", ErrInvalid, h.Source, MaxSourceLen)
	}
	v := h.Version
	if v == 0 {
		v = Version
	}
	if v < MinVersion || v > Version {
		return dst, fmt.Errorf("%w: header version %d (this build writes %d to %d)", ErrInvalid, v, MinVersion, Version)
	}
	if v < 2 && h.LowWatermark != (Position{}) {
		return dst, fmt.Errorf("%w: a version %d header has no low watermark", ErrInvalid, v)
	}
	start := len(dst)
	dst = append(dst, Magic...)
	dst = binary.LittleEndian.AppendUint16(dst, v)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(HeaderLen(v, h.Source)))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, h.Segment)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.Created))
	dst = append(dst, byte(len(h.Source)))
	dst = append(dst, h.Source...)
	if v >= 2 {
		dst = binary.LittleEndian.AppendUint64(dst, h.LowWatermark.Segment)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(h.LowWatermark.Offset))
	}
	dst = binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:]))
	return dst, nil
}

// ParseHeader parses the segment header at the start of b. A b too short to
// hold the header returns ErrTornTail (a file being created); anything else
// that does not check out is ErrBadMagic, ErrVersion, ErrChecksum or
// ErrCorrupt.
func ParseHeader(b []byte) (SegmentHeader, error) {
	if len(b) < len(Magic) {
		if string(b) != Magic[:len(b)] {
			return SegmentHeader{}, ErrBadMagic
		}
		return SegmentHeader{}, ErrTornTail
	}
	if string(b[:8]) != Magic {
		return SegmentHeader{}, ErrBadMagic
	}
	if len(b) < 12 {
		return SegmentHeader{}, ErrTornTail
	}
	h := SegmentHeader{Version: binary.LittleEndian.Uint16(b[8:])}
	if h.Version < MinVersion || h.Version > Version {
		return h, fmt.Errorf("%w: version %d, this build reads %d to %d", ErrVersion, h.Version, MinVersion, Version)
	}
	h.Len = int(binary.LittleEndian.Uint16(b[10:]))
	if h.Len < MinHeaderLen || h.Len > MaxHeaderLen {
		return h, fmt.Errorf("%w: header length %d", ErrCorrupt, h.Len)
	}
	if len(b) < h.Len {
		return h, ErrTornTail
	}
	if got, want := Checksum(b[:h.Len-4]), binary.LittleEndian.Uint32(b[h.Len-4:]); got != want {
		return h, fmt.Errorf("%w: header crc %08x, computed %08x", ErrChecksum, want, got)
	}
	if flags := binary.LittleEndian.Uint32(b[12:]); flags != 0 {
		return h, fmt.Errorf("%w: unknown header flags %#x", ErrCorrupt, flags)
	}
	h.Segment = binary.LittleEndian.Uint64(b[16:])
	h.Created = int64(binary.LittleEndian.Uint64(b[24:]))
	n := int(b[32])
	if HeaderLen(h.Version, "")+n > h.Len {
		return h, fmt.Errorf("%w: source name of %d bytes in a version %d header of %d", ErrCorrupt, n, h.Version, h.Len)
	}
	h.Source = string(b[33 : 33+n])
	if !ValidSource(h.Source) {
		return h, fmt.Errorf("%w: invalid source name %q", ErrCorrupt, h.Source)
	}
	if h.Version >= 2 {
		lw := b[33+n:]
		h.LowWatermark = Position{Segment: binary.LittleEndian.Uint64(lw), Offset: int64(binary.LittleEndian.Uint64(lw[8:]))}
		if h.LowWatermark.Offset < 0 || (h.LowWatermark.Segment == 0) != (h.LowWatermark.Offset == 0) || h.LowWatermark.Segment > h.Segment {
			return h, fmt.Errorf("%w: low watermark %v in the header of segment %d", ErrCorrupt, h.LowWatermark, h.Segment)
		}
	}
	return h, nil
}

// Ext is the file name extension of segment files.
const Ext = ".ferry"

// SegmentName returns the file name of a source's segment.
func SegmentName(source string, segment uint64) string {
	return fmt.Sprintf("%s-%020d%s", source, segment, Ext)
}

// ParseSegmentName parses a name made by SegmentName.
func ParseSegmentName(name string) (source string, segment uint64, ok bool) {
	base, found := strings.CutSuffix(name, Ext)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 || len(base)-i-1 != 20 {
		return "", 0, false
	}
	seg, err := strconv.ParseUint(base[i+1:], 10, 64)
	if err != nil || !ValidSource(base[:i]) {
		return "", 0, false
	}
	return base[:i], seg, true
}

// SegmentFile is a segment found in a directory.
type SegmentFile struct {
	Path    string
	Source  string
	Segment uint64
}

// ListSegments returns the segments in dir, of source only unless source is
// empty, ordered by source then segment number. Files that are not named
// like segments are ignored; an entry named like a segment that is not a
// regular file (a directory, FIFO, device or symbolic link) is an error
// wrapping ErrNotRegular, so that no reader blocks on it or skips it
// silently.
func ListSegments(dir, source string) ([]SegmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("format: listing segments: %w", err)
	}
	var out []SegmentFile
	for _, e := range entries {
		src, seg, ok := ParseSegmentName(e.Name())
		if !ok || (source != "" && src != source) {
			continue
		}
		if !e.Type().IsRegular() {
			return nil, notRegular(filepath.Join(dir, e.Name()), e.Type())
		}
		out = append(out, SegmentFile{Path: filepath.Join(dir, e.Name()), Source: src, Segment: seg})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Segment < out[j].Segment
	})
	return out, nil
}

// EmptySegmentEnd reports whether off is where a segment of source ends when
// it holds no frame, whatever its format version: right after its header.
// A receiver told that a segment ended there knows it produced no message.
func EmptySegmentEnd(source string, off int64) bool {
	for v := uint16(MinVersion); v <= Version; v++ {
		if off == int64(HeaderLen(v, source)) {
			return true
		}
	}
	return false
}
