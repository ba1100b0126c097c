package format_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// TestSegmentDataSize: the end of a segment's data, with and without the
// reserved space of a preallocating writer; EstimateDataSize finds the same
// in a few reads where no frame holds a block of zeros.
func TestSegmentDataSize(t *testing.T) {
	data, offs := buildSegment(t, 1, 120, false)
	zeros := func(b []byte, n int) []byte { return append(bytes.Clone(b), make([]byte, n)...) }
	// A frame whose image holds 8 KiB of zeros: two whole zero blocks.
	zeroImage, err := format.AppendTx(bytes.Clone(data), &format.Tx{CommitTime: 7, Changes: []format.Change{
		{Table: "t", Op: format.OpUpsert, Content: format.ContentBinary, Key: []byte("z"), After: make([]byte, 8<<10)}}})
	if err != nil {
		t.Fatal(err)
	}
	hdr := data[:offs[0]]
	for _, c := range []struct {
		name     string
		file     []byte
		want     int64
		estimate bool // EstimateDataSize finds it too
	}{
		{"Appended", data, int64(len(data)), true},
		{"Preallocated", zeros(data, 1<<20), int64(len(data)), true},
		{"HeaderOnly", zeros(hdr, 1<<20), int64(len(hdr)), true},
		{"TornThenZeros", zeros(data[:offs[119]+30], 1<<20), int64(offs[119] + 30), true},
		{"ZeroBlocksInAFrame", zeros(zeroImage, 1<<20), int64(len(zeroImage)), false},
		{"BlockAligned", zeros(data[:len(data)/4096*4096], 64<<10), -1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), format.SegmentName("shop", 1))
			if err := os.WriteFile(path, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := format.SegmentDataSize(path)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if want < 0 { // cut inside a frame: up to its last byte that is not zero
				want = int64(bytes.LastIndexFunc(c.file, func(r rune) bool { return r != 0 }) + 1)
			}
			if got != want {
				t.Fatalf("SegmentDataSize = %d, want %d", got, want)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			est, err := format.EstimateDataSize(f, int64(len(c.file)))
			if err != nil {
				t.Fatal(err)
			}
			if c.estimate && est != want {
				t.Fatalf("EstimateDataSize = %d, want %d", est, want)
			}
			if !c.estimate && est > want {
				t.Fatalf("EstimateDataSize = %d, more than the data (%d)", est, want)
			}
		})
	}
}
