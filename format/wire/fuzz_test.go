package wire_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/klauspost/compress/zstd"
)

// encodeHeaders renders headers as "key: value" lines, the form the header
// fuzzer mutates.
func encodeHeaders(h map[string][]string) []byte {
	var keys []string
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range h[k] {
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return []byte(b.String())
}

func decodeHeaders(b []byte) map[string][]string {
	h := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok {
			h[k] = append(h[k], v)
		}
	}
	return h
}

func sampleBatches() []wire.Batch {
	return []wire.Batch{
		{Source: "shop", Segment: 1, From: 41, To: 132, Frames: 2, Changes: 1, FirstCommit: 5, LastCommit: 6,
			Codec: wire.CodecZstd, RawLen: 91, Parts: 1, PrevEnd: 0},
		{Source: "billing-eu_2", Segment: 7, From: 4096, To: 9000000, Frames: 1, Changes: 30000, FirstCommit: 9, LastCommit: 9,
			Codec: wire.CodecS2, RawLen: 1 << 20, Part: 3, Parts: 9, PrevEnd: -1},
		{Source: "s", Segment: 2, From: 37, To: 38, Frames: 1, Codec: wire.CodecNone, RawLen: 1, Parts: 1, PrevEnd: 5000, Torn: 17},
		{Source: "shop", Segment: 3, From: 100, To: 200, Frames: 2, Codec: wire.CodecZstd, RawLen: 100, Parts: 1, PrevEnd: -1, Repair: 4},
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, b := range sampleBatches() {
		got, err := wire.ParseHeader(b.Header())
		if err != nil {
			t.Fatalf("%s: %v", b.MsgID(), err)
		}
		if !reflect.DeepEqual(got, b) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, b)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, b := range sampleBatches() {
		f.Add(encodeHeaders(b.Header()))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := wire.ParseHeader(decodeHeaders(in))
		if err != nil {
			return
		}
		if b.To <= b.From || b.RawLen > wire.MaxRawLen || b.Part >= b.Parts {
			t.Fatalf("ParseHeader accepted an inconsistent batch %+v", b)
		}
		again, err := wire.ParseHeader(b.Header())
		if err != nil || !reflect.DeepEqual(again, b) {
			t.Fatalf("re-encoded headers do not parse back (%v):\n got %+v\nwant %+v", err, again, b)
		}
		// The one rule of where a message leaves its source shipped (the
		// shipper's resume, ferry status, the receiver's shipped position):
		// the range's end once whole, else the split frame's start.
		end, want := b.End(), b.To
		if !b.Whole() {
			want = b.From
		}
		if end.Segment != b.Segment || end.Offset != want {
			t.Fatalf("End() = %v for %+v, want %d:%d", end, b, b.Segment, want)
		}
		if prev, ok := b.Prev(); ok && prev.Offset != b.PrevEnd {
			t.Fatalf("Prev() = %v for %+v", prev, b)
		}
	})
}

func FuzzDecompress(f *testing.F) {
	comp, err := wire.NewCompressor(zstd.SpeedFastest)
	if err != nil {
		f.Fatal(err)
	}
	dec, err := wire.NewDecompressor()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(dec.Close)
	paths, _ := filepath.Glob(filepath.Join("..", "testdata", "*.ferry"))
	if len(paths) == 0 {
		f.Fatal("no golden vectors in ../testdata")
	}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, c := range []wire.Codec{wire.CodecNone, wire.CodecZstd, wire.CodecS2} {
			body, err := comp.Compress(nil, raw, c)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(body, uint8(c), uint32(len(raw)))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, codec uint8, rawLen uint32) {
		// Keep claimed sizes small so the fuzzer explores rather than
		// allocates; the bound itself is tested by TestDecompressBounds.
		b := wire.Batch{Source: "f", Segment: 1, From: 0, To: 1, Codec: wire.Codec(codec % 4), RawLen: int(rawLen % (1 << 20)), Parts: 1}
		out, err := dec.Decompress(nil, body, &b)
		if err != nil {
			return
		}
		if len(out) != b.RawLen {
			t.Fatalf("Decompress returned %d bytes, headers say %d", len(out), b.RawLen)
		}
		re, err := comp.Compress(nil, out, b.Codec)
		if err != nil {
			t.Fatalf("re-compress: %v", err)
		}
		again, err := dec.Decompress(nil, re, &b)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("re-compressed body does not round trip: %v", err)
		}
	})
}

// TestDecompressBounds checks that a body claiming more than RawLen, or a
// RawLen over MaxRawLen, is refused without inflating it.
func TestDecompressBounds(t *testing.T) {
	comp, err := wire.NewCompressor(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := wire.NewDecompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	big := make([]byte, 4<<20) // compresses to almost nothing
	for _, c := range []wire.Codec{wire.CodecNone, wire.CodecZstd, wire.CodecS2} {
		body, err := comp.Compress(nil, big, c)
		if err != nil {
			t.Fatal(err)
		}
		b := wire.Batch{Source: "f", Segment: 1, To: 1, Codec: c, RawLen: 1000, Parts: 1}
		if out, err := dec.Decompress(nil, body, &b); err == nil {
			t.Fatalf("%v: a 4 MiB body decompressed to %d bytes under a RawLen of 1000", c, len(out))
		}
		b.RawLen = wire.MaxRawLen + 1
		if _, err := dec.Decompress(nil, body, &b); err == nil {
			t.Fatalf("%v: RawLen over MaxRawLen accepted", c)
		}
		b.RawLen = len(big)
		if out, err := dec.Decompress(nil, body, &b); err != nil || !bytes.Equal(out, big) {
			t.Fatalf("%v: honest body: %v", c, err)
		}
	}
}
