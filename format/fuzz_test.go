package format_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// The fuzz targets seed from the golden vectors in testdata/, so `go test`
// runs every seed as a regular test; `make fuzz` (go test -fuzz) explores
// from there. Each asserts that decoding never panics, stays within a bound
// of allocation proportional to its input, and that whatever decodes
// re-encodes to the same bytes.

// goldenFiles returns the bytes of every vector in testdata/.
func goldenFiles(f *testing.F) [][]byte {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.ferry"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no golden vectors in testdata (%v)", err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// goldenFrames returns every whole frame of the golden vectors.
func goldenFrames(f *testing.F) [][]byte {
	var out [][]byte
	for _, b := range goldenFiles(f) {
		h, err := format.ParseHeader(b)
		if err != nil {
			continue
		}
		for off := h.Len; ; {
			_, n, err := format.ParseFrame(b[off:])
			if err != nil {
				break
			}
			out = append(out, b[off:off+n])
			off += n
		}
	}
	return out
}

// allocBound fails t if running fn allocates more than limit bytes.
func allocBound(t *testing.T, limit uint64, fn func()) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > limit {
		t.Fatalf("allocated %d bytes, bound %d", got, limit)
	}
}

func FuzzParseFrame(f *testing.F) {
	for _, b := range goldenFrames(f) {
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := format.ParseFrame(b)
		if err != nil {
			if !errors.Is(err, format.ErrTornTail) && !errors.Is(err, format.ErrChecksum) && !errors.Is(err, format.ErrCorrupt) {
				t.Fatalf("ParseFrame error %v is none of the documented ones", err)
			}
			return
		}
		if n != fr.Len() || n > len(b) {
			t.Fatalf("ParseFrame returned size %d for a frame of %d in %d bytes", n, fr.Len(), len(b))
		}
		if re := format.AppendFrame(nil, fr.Type, fr.Payload); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded frame differs:\n got %x\nwant %x", re, b[:n])
		}
	})
}

func FuzzDecodeTx(f *testing.F) {
	for _, b := range goldenFrames(f) {
		if format.FrameType(b[8]) == format.FrameTx {
			f.Add(b[format.FrameHeaderLen:])
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var tx format.Tx
		var err error
		allocBound(t, 16*uint64(len(payload))+64<<10, func() { err = format.DecodeTx(payload, &tx) })
		if err != nil {
			if !errors.Is(err, format.ErrCorrupt) {
				t.Fatalf("DecodeTx error %v is not ErrCorrupt", err)
			}
			return
		}
		re, err := format.AppendTx(nil, &tx)
		if err != nil {
			t.Fatalf("a decoded transaction does not encode: %v", err)
		}
		if !bytes.Equal(re[format.FrameHeaderLen:], payload) {
			t.Fatalf("re-encoded payload differs:\n got %x\nwant %x", re[format.FrameHeaderLen:], payload)
		}
	})
}

func FuzzParseHeader(f *testing.F) {
	for _, b := range goldenFiles(f) {
		f.Add(b[:min(len(b), 64)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := format.ParseHeader(b)
		if err != nil {
			return
		}
		if h.Len > len(b) || h.Version < format.MinVersion || h.Version > format.Version || !format.ValidSource(h.Source) {
			t.Fatalf("ParseHeader accepted %+v from %d bytes", h, len(b))
		}
		if h.Len != format.HeaderLen(h.Version, h.Source) {
			return // a header extension: valid, not what this version writes
		}
		re, err := format.AppendHeader(nil, h)
		if err != nil || !bytes.Equal(re, b[:h.Len]) {
			t.Fatalf("re-encoded header differs (%v):\n got %x\nwant %x", err, re, b[:h.Len])
		}
	})
}

func FuzzDecodeSeal(f *testing.F) {
	for _, b := range goldenFrames(f) {
		if format.FrameType(b[8]) == format.FrameSeal {
			f.Add(b[format.FrameHeaderLen:])
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		s, err := format.DecodeSeal(payload)
		if err != nil {
			return
		}
		re := format.AppendSeal(nil, s)
		if !bytes.Equal(re[format.FrameHeaderLen:], payload) {
			t.Fatalf("re-encoded seal differs:\n got %x\nwant %x", re[format.FrameHeaderLen:], payload)
		}
	})
}

// FuzzDecodeOutcome feeds outcome payloads: what decodes re-encodes to the
// same bytes, allocation stays bounded by the input, and nothing panics.
func FuzzDecodeOutcome(f *testing.F) {
	for _, b := range goldenFrames(f) {
		if format.FrameType(b[8]) == format.FrameOutcome {
			f.Add(b[format.FrameHeaderLen:])
		}
	}
	f.Add([]byte{})
	f.Add(append(make([]byte, 8), 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var o format.Outcome
		var err error
		allocBound(t, 32*uint64(len(payload))+4<<10, func() { err = format.DecodeOutcome(payload, &o) })
		if err != nil {
			if !errors.Is(err, format.ErrCorrupt) {
				t.Fatalf("DecodeOutcome error %v is not ErrCorrupt", err)
			}
			return
		}
		re, err := format.AppendOutcome(nil, o)
		if err != nil {
			t.Fatalf("a decoded outcome does not encode: %v", err)
		}
		if !bytes.Equal(re[format.FrameHeaderLen:], payload) {
			t.Fatalf("re-encoded outcome differs:\n got %x\nwant %x", re[format.FrameHeaderLen:], payload)
		}
	})
}

// FuzzDecodeRejection: what decodes re-encodes to the same bytes.
func FuzzDecodeRejection(f *testing.F) {
	for _, b := range goldenFrames(f) {
		if format.FrameType(b[8]) == format.FrameRejection {
			f.Add(b[format.FrameHeaderLen:])
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := format.DecodeRejection(payload)
		if err != nil {
			if !errors.Is(err, format.ErrCorrupt) {
				t.Fatalf("DecodeRejection error %v is not ErrCorrupt", err)
			}
			return
		}
		re, err := format.AppendRejection(nil, r)
		if err != nil {
			t.Fatalf("a decoded rejection does not encode: %v", err)
		}
		if !bytes.Equal(re[format.FrameHeaderLen:], payload) {
			t.Fatalf("re-encoded rejection differs:\n got %x\nwant %x", re[format.FrameHeaderLen:], payload)
		}
	})
}

// FuzzDecodeApplied: what decodes re-encodes to the same bytes.
func FuzzDecodeApplied(f *testing.F) {
	for _, b := range goldenFrames(f) {
		if format.FrameType(b[8]) == format.FrameApplied {
			f.Add(b[format.FrameHeaderLen:])
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := format.DecodeApplied(payload)
		if err != nil {
			if !errors.Is(err, format.ErrCorrupt) {
				t.Fatalf("DecodeApplied error %v is not ErrCorrupt", err)
			}
			return
		}
		re, err := format.AppendApplied(nil, a)
		if err != nil {
			t.Fatalf("a decoded applied record does not encode: %v", err)
		}
		if !bytes.Equal(re[format.FrameHeaderLen:], payload) {
			t.Fatalf("re-encoded applied record differs:\n got %x\nwant %x", re[format.FrameHeaderLen:], payload)
		}
	})
}

func FuzzReader(f *testing.F) {
	for _, b := range goldenFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		allocBound(t, 4*uint64(len(data))+2<<20, func() { fuzzReadAll(t, data) })
	})
}

func fuzzReadAll(t *testing.T, data []byte) {
	rd, err := format.NewReader(bytes.NewReader(data), "fuzz")
	if err != nil {
		return
	}
	last := int64(-1)
	var tx format.Tx
	var outcome format.Outcome
	for {
		fr, err := rd.Next()
		if err != nil {
			if err != io.EOF {
				var pe *format.PositionError
				if !errors.As(err, &pe) || pe.Offset < 0 || pe.Offset > int64(len(data)) {
					t.Fatalf("reader error %v has no position within the input", err)
				}
			}
			return
		}
		off := rd.Offset()
		if off <= last || rd.End() > int64(len(data)) || !bytes.Equal(rd.Raw(), data[off:rd.End()]) {
			t.Fatalf("frame at %d (after %d, end %d) does not match the input", off, last, rd.End())
		}
		last = off
		switch fr.Type {
		case format.FrameTx:
			_ = format.DecodeTx(fr.Payload, &tx)
		case format.FrameOutcome:
			_ = format.DecodeOutcome(fr.Payload, &outcome)
		case format.FrameRejection:
			_, _ = format.DecodeRejection(fr.Payload)
		}
	}
}

// FuzzTxChangeCount checks the count read without decoding the changes
// against DecodeTx: on a payload DecodeTx accepts, the whole payload and its
// first MaxTxHeaderLen bytes both give DecodeTx's count; on any payload it
// never panics.
func FuzzTxChangeCount(f *testing.F) {
	for _, b := range goldenFrames(f) {
		if format.FrameType(b[8]) == format.FrameTx {
			f.Add(b[format.FrameHeaderLen:])
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, 9))
	f.Fuzz(func(t *testing.T, p []byte) {
		c, cerr := format.TxChangeCount(p, len(p))
		head := p[:min(len(p), format.MaxTxHeaderLen)]
		hc, herr := format.TxChangeCount(head, len(p))
		var tx format.Tx
		if err := format.DecodeTx(p, &tx); err == nil {
			if cerr != nil || c != len(tx.Changes) {
				t.Fatalf("TxChangeCount = %d, %v; DecodeTx decoded %d changes", c, cerr, len(tx.Changes))
			}
			if herr != nil || hc != c {
				t.Fatalf("TxChangeCount of the first %d bytes = %d, %v; of the whole payload %d", len(head), hc, herr, c)
			}
		}
	})
}
