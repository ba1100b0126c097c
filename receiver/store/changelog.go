package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/klauspost/compress/s2"
)

// The change log is stored as entries, not one record per change: an entry
// holds consecutive transaction frames of one source and segment, as the
// raw frames themselves (s2-compressed), and is known by its first change
// id. Entries are appended to the change log's files, indexed in Pebble
// (logfile.go); readers decode the frames (and check their CRCs again) when
// they serve the feed.
//
// An entry comes in one of two forms. A message applied whole is kept as it
// came off the stream: its compressed body (all its frames, heartbeats and
// seals included) and the offsets of its transaction frames, so applying it
// costs no compression at all. Anything else (a message applied in part, a
// frame split over several messages, uncompressed messages) is kept as its
// transaction frames, concatenated and s2-compressed.
//
// Entry value:
//
//	| version u8 | changes u32 | applied i64 | source (uvarint len + bytes) |
//	| segment u64 | frames uvarint | frame offsets (uvarint deltas from 0) |
//	versions 3 and 4 only: | skipped count uvarint |
//	           | skipped x ( frame uvarint delta | change index uvarint ) |
//	version 1 and 3: | s2 block of the concatenated frames |
//	version 2 and 4: | body's first offset u64 | codec u8 | raw length uvarint |
//	           | the message body (wire codec) |
//
// Versions 3 and 4 are 1 and 2 with the changes of their frames that the
// row guard skipped (guard.go): those are not in the log (a stale change
// is not a state transition) and take no change id. Frames are counted
// from 0 in the entry, deltas from the previous skipped change's frame.
const maxEntryRaw = 1 << 20

const (
	entryBody      = 2 // version of the body form
	entryRawSkips  = 3 // the raw form with skipped changes
	entryBodySkips = 4 // the body form with skipped changes
)

// skipRef names a change of an entry's frame that the row guard skipped.
type skipRef struct{ frame, index int32 }

type logEntry struct {
	first   uint64 // first change id
	changes int
	applied int64
	source  string
	segment uint64
	offsets []int64
	raw     []byte // concatenated frames, uncompressed (version 1)
	skips   []skipRef

	// The body form (version 2).
	hasBody bool
	body    []byte
	from    int64 // segment offset of the body's first byte
	codec   wire.Codec
	rawLen  int
}

func appendEntry(dst []byte, e *logEntry) []byte {
	v := byte(recordVersion)
	switch {
	case e.hasBody && len(e.skips) > 0:
		v = entryBodySkips
	case e.hasBody:
		v = entryBody
	case len(e.skips) > 0:
		v = entryRawSkips
	}
	dst = append(dst, v)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(e.changes))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.applied))
	dst = appendString(dst, e.source)
	dst = binary.LittleEndian.AppendUint64(dst, e.segment)
	dst = binary.AppendUvarint(dst, uint64(len(e.offsets)))
	prev := int64(0)
	for _, o := range e.offsets {
		dst = binary.AppendUvarint(dst, uint64(o-prev))
		prev = o
	}
	if len(e.skips) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(e.skips)))
		pf := int32(0)
		for _, k := range e.skips {
			dst = binary.AppendUvarint(dst, uint64(k.frame-pf))
			dst = binary.AppendUvarint(dst, uint64(k.index))
			pf = k.frame
		}
	}
	if e.hasBody {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(e.from))
		dst = append(dst, byte(e.codec))
		dst = binary.AppendUvarint(dst, uint64(e.rawLen))
		return append(dst, e.body...)
	}
	n := s2.MaxEncodedLen(len(e.raw))
	start := len(dst)
	dst = slices.Grow(dst, n)
	out := s2.Encode(dst[start:start+n], e.raw)
	return dst[:start+len(out)]
}

// entryHeader decodes an entry's header; the rest is the compressed frames
// (version 1) or the body (version 2).
func entryHeader(first uint64, b []byte) (logEntry, []byte, error) {
	r := reader{b: b}
	v := r.u8()
	if (v < recordVersion || v > entryBodySkips) && r.err == nil {
		return logEntry{}, nil, fmt.Errorf("store: change log entry %d: unknown record version %d", first, v)
	}
	e := logEntry{first: first, hasBody: v == entryBody || v == entryBodySkips}
	e.changes = int(r.u32())
	e.applied = int64(r.u64())
	e.source = string(r.bytes())
	e.segment = r.u64()
	if r.err == nil {
		n, k := binary.Uvarint(r.b[r.off:])
		if k <= 0 || n > uint64(len(r.b)-r.off) {
			r.fail("bad frame count")
		} else {
			r.off += k
			e.offsets = make([]int64, 0, n)
			prev := int64(0)
			for i := uint64(0); i < n && r.err == nil; i++ {
				d, k := binary.Uvarint(r.b[r.off:])
				if k <= 0 {
					r.fail("bad frame offset")
					break
				}
				r.off += k
				prev += int64(d)
				e.offsets = append(e.offsets, prev)
			}
		}
	}
	if (v == entryRawSkips || v == entryBodySkips) && r.err == nil {
		n := r.uvarint()
		if n == 0 || n > uint64(len(r.b)-r.off)/2 {
			r.fail("bad skipped count")
		}
		frame := uint64(0)
		for i := uint64(0); i < n && r.err == nil; i++ {
			frame += r.uvarint()
			idx := r.uvarint()
			if frame >= uint64(len(e.offsets)) || idx > math.MaxInt32 {
				r.fail("bad skipped change")
				break
			}
			e.skips = append(e.skips, skipRef{frame: int32(frame), index: int32(idx)})
		}
	}
	if e.hasBody {
		e.from = int64(r.u64())
		e.codec = wire.Codec(r.u8())
		if r.err == nil {
			n, k := binary.Uvarint(r.b[r.off:])
			if k <= 0 || n > wire.MaxRawLen {
				r.fail("bad raw length")
			} else {
				r.off += k
				e.rawLen = int(n)
			}
		}
	}
	if r.err != nil {
		return logEntry{}, nil, fmt.Errorf("store: change log entry %d: %w", first, r.err)
	}
	return e, r.b[r.off:], nil
}

// decodeEntry returns the changes of an entry with ids in (after, ...],
// appending at most limit to out; dec inflates body-form entries.
func decodeEntry(dec *wire.Decompressor, first uint64, b []byte, after uint64, limit int, out []Change) ([]Change, error) {
	e, comp, err := entryHeader(first, b)
	if err != nil {
		return out, err
	}
	if e.changes == 0 || first+uint64(e.changes)-1 <= after {
		return out, nil
	}
	var raw []byte
	if e.hasBody {
		raw, err = dec.Decompress(nil, comp, &wire.Batch{Source: e.source, Segment: e.segment, From: e.from, To: e.from + int64(e.rawLen), Codec: e.codec, RawLen: e.rawLen})
	} else {
		raw, err = s2.Decode(nil, comp)
	}
	if err != nil {
		return out, fmt.Errorf("store: change log entry %d: %w", first, err)
	}
	id := first
	load, _ := LoadOf(e.source)
	var tx format.Tx
	pos := 0
	skips := e.skips
	for fi, off := range e.offsets {
		// The changes of this frame the row guard skipped.
		var fs []skipRef
		for len(skips) > 0 && skips[0].frame < int32(fi) {
			skips = skips[1:]
		}
		k := 0
		for k < len(skips) && skips[k].frame == int32(fi) {
			k++
		}
		fs, skips = skips[:k], skips[k:]
		if e.hasBody {
			// The body holds every frame of its range: find each by offset.
			pos = int(off - e.from)
			if off < e.from || pos >= len(raw) {
				return out, fmt.Errorf("store: change log entry %d: frame offset %d outside the body [%d, %d)", first, off, e.from, e.from+int64(len(raw)))
			}
		}
		f, n, err := format.ParseFrame(raw[pos:])
		if err == nil && f.Type != format.FrameTx {
			err = fmt.Errorf("a %s frame, not a transaction", f.Type)
		}
		if err != nil {
			return out, fmt.Errorf("store: change log entry %d: frame at %s:%d:%d: %w", first, e.source, e.segment, off, err)
		}
		pos += n
		if k, err := format.TxChangeCount(f.Payload, len(f.Payload)); err == nil && k >= len(fs) && id+uint64(k-len(fs)) <= after+1 {
			id += uint64(k - len(fs)) // all before the cursor: count them, skip decoding
			continue
		}
		if err := format.DecodeTx(f.Payload, &tx); err != nil {
			return out, fmt.Errorf("store: change log entry %d: frame at %s:%d:%d: %w", first, e.source, e.segment, off, err)
		}
		for i := range tx.Changes {
			if len(fs) > 0 && fs[0].index == int32(i) {
				fs = fs[1:]
				continue // skipped by the row guard: not in the log
			}
			if id > after {
				if len(out) >= limit {
					return out, nil
				}
				c := &tx.Changes[i]
				ch := Change{ID: id, Table: c.Table, Key: c.Key, Op: c.Op, Content: c.Content, After: c.After, Before: c.Before,
					Version: Version{Source: e.source, Segment: e.segment, Offset: off, Index: i}, RowVersion: c.Version, CommitTime: tx.CommitTime,
					AppliedAt: e.applied, TxID: tx.ID, Origin: tx.Origin, Command: tx.Command, Load: load}
				out = append(out, ch)
			}
			id++
		}
	}
	if id != first+uint64(e.changes) {
		return out, fmt.Errorf("store: change log entry %d: frames hold %d changes, the entry says %d", first, id-first, e.changes)
	}
	return out, nil
}
