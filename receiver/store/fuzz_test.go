package store

import (
	"testing"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// FuzzDecodeRecords feeds arbitrary bytes to every decoder of what the store
// reads back from disk (rows, positions, cursors, change log index records
// and entries in all forms, with skipped changes too; the row guard's view
// of a row; park keys): a damaged store must give errors, never a panic.
func FuzzDecodeRecords(f *testing.F) {
	c := format.Change{Table: "t", Op: format.OpUpsert, Key: []byte("k"), After: []byte(`{"a":1}`)}
	f.Add(appendRow(nil, &c, &Version{Source: "s", Segment: 3, Offset: 1 << 20, Index: 2}, 1700000000000000000, 42))
	f.Add(encodePos(nil, &SourcePosition{Source: "s", Segment: 2, Offset: 99, Changes: 7, Sealed: true}))
	f.Add(encodeCursor(StreamCursor{Seq: 9, Created: 5}))
	f.Add(appendIndex(nil, &indexRecord{file: 1, off: 64, length: 100, changes: 3, applied: 1}))
	tx := format.Tx{CommitTime: 1, Changes: []format.Change{c, c}}
	frame, err := format.AppendTx(nil, &tx)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(appendEntry(nil, &logEntry{changes: 2, source: "s", segment: 1, offsets: []int64{45}, raw: frame}))
	comp, err := wire.NewCompressor(1)
	if err != nil {
		f.Fatal(err)
	}
	body, err := comp.Compress(nil, frame, wire.CodecZstd)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(appendEntry(nil, &logEntry{changes: 2, source: "s", segment: 1, offsets: []int64{45}, hasBody: true,
		body: body, from: 45, codec: wire.CodecZstd, rawLen: len(frame)}))
	f.Add(appendEntry(nil, &logEntry{changes: 1, source: "s", segment: 1, offsets: []int64{45}, raw: frame,
		skips: []skipRef{{frame: 0, index: 1}}}))
	f.Add(appendEntry(nil, &logEntry{changes: 1, source: "s", segment: 1, offsets: []int64{45}, hasBody: true,
		body: body, from: 45, codec: wire.CodecZstd, rawLen: len(frame), skips: []skipRef{{frame: 0, index: 0}}}))
	del := format.Change{Table: "t", Op: format.OpDelete, Key: []byte("k"), Version: 9}
	f.Add(appendRow(nil, &del, &Version{Source: "s", Segment: 3, Offset: 45}, 1, 43))
	f.Add(appendParkKey(nil, "s", format.Position{Segment: 2, Offset: 45}))
	dec, err := wire.NewDecompressor()
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeRow("t", []byte("k"), b)
		parseRowMeta(b)
		parkKeySource(b)
		decodePos("s", b)
		decodeCursor(b)
		if x, err := decodeIndex(10, b); err == nil && x.length > maxEntryLen {
			t.Fatalf("decodeIndex accepted an entry of %d bytes (limit %d): a reader would allocate that", x.length, maxEntryLen)
		}
		entryHeader(10, b)
		out, err := decodeEntry(dec, 10, b, 0, 100, nil)
		if err == nil && len(out) > 100 {
			t.Fatalf("decodeEntry returned %d changes, limit 100", len(out))
		}
	})
}
