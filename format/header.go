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
	Version uint16
	Source  string
	Segment uint64
	// Created is when the writer created the segment, in Unix nanoseconds.
	Created int64
	// Len is the header's size on disk: the offset of the first frame.
	Len int
}

// AppendHeader validates h and appends its encoding to dst. h.Version and
// h.Len are ignored: the header is written at Version.
func AppendHeader(dst []byte, h SegmentHeader) ([]byte, error) {
	if !ValidSource(h.Source) {
		return dst, fmt.Errorf("%w: source name %q (want 1-%d of [A-Za-z0-9_-])", ErrInvalid, h.Source, MaxSourceLen)
	}
	start := len(dst)
	dst = append(dst, Magic...)
	dst = binary.LittleEndian.AppendUint16(dst, Version)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(MinHeaderLen+len(h.Source)))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, h.Segment)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.Created))
	dst = append(dst, byte(len(h.Source)))
	dst = append(dst, h.Source...)
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
	if h.Version != Version {
		return h, fmt.Errorf("%w: version %d, this build reads %d", ErrVersion, h.Version, Version)
	}
	h.Len = int(binary.LittleEndian.Uint16(b[10:]))
	if h.Len < MinHeaderLen || h.Len > MinHeaderLen+255 {
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
	if MinHeaderLen+n > h.Len {
		return h, fmt.Errorf("%w: source name of %d bytes in a header of %d", ErrCorrupt, n, h.Len)
	}
	h.Source = string(b[33 : 33+n])
	if !ValidSource(h.Source) {
		return h, fmt.Errorf("%w: invalid source name %q", ErrCorrupt, h.Source)
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
// like segments are ignored.
func ListSegments(dir, source string) ([]SegmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("format: listing segments: %w", err)
	}
	var out []SegmentFile
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		src, seg, ok := ParseSegmentName(e.Name())
		if !ok || (source != "" && src != source) {
			continue
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
