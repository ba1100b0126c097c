package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSortRows checks the radix sort of buffered row writes against a plain
// stable sort by (key, seq), on keys that share prefixes, differ only after
// their first 8 bytes, differ only in trailing zero bytes, and repeat.
func TestSortRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	gens := map[string]func() []byte{
		"short":     func() []byte { return fmt.Appendf(nil, "k%d", rng.IntN(50)) },
		"order":     func() []byte { return fmt.Appendf(nil, "order-%07d", rng.IntN(1_000_000)) },
		"long-tail": func() []byte { return fmt.Appendf(nil, "12345678%d", rng.IntN(300)) },
		"zero-pad":  func() []byte { return append([]byte("ab"), make([]byte, rng.IntN(4))...) },
		"binary":    func() []byte { return binary.BigEndian.AppendUint64(nil, rng.Uint64()>>rng.IntN(64)) },
		"one-key":   func() []byte { return []byte("same") },
		"mixed-lens": func() []byte {
			b := make([]byte, rng.IntN(12))
			for i := range b {
				b[i] = byte(rng.IntN(4))
			}
			return b
		},
	}
	for name, gen := range gens {
		for _, n := range []int{1, 2, 3, 100, 5000} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				var buf []byte
				rows := make([]rowOp, n)
				for i := range rows {
					k := gen()
					rows[i] = rowOp{koff: int32(len(buf)), kend: int32(len(buf) + len(k)), seq: int32(i)}
					buf = append(buf, k...)
				}
				rest := func(r rowOp) []byte { return buf[r.koff:r.kend] }
				for i := range rows {
					var w [8]byte
					copy(w[:], rest(rows[i]))
					rows[i].pfx = binary.BigEndian.Uint64(w[:])
				}
				want := slices.Clone(rows)
				slices.SortStableFunc(want, func(x, y rowOp) int {
					if c := bytes.Compare(rest(x), rest(y)); c != 0 {
						return c
					}
					return cmp.Compare(x.seq, y.seq)
				})
				got, _ := sortRows(rows, nil, rest)
				if !slices.Equal(got, want) {
					t.Fatalf("sortRows differs from a stable sort by key")
				}
			})
		}
	}
}
