package tail

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// BenchmarkTxChanges compares reading a transaction's change count with
// txChanges (the count only) and with format.DecodeTx (the whole payload,
// every length checked), on ~200-byte changes.
func BenchmarkTxChanges(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		tx := &format.Tx{CommitTime: 1, ID: "tx-123456", Origin: "orders-db"}
		for c := 0; c < n; c++ {
			tx.Changes = append(tx.Changes, format.Change{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint("key-", c)),
				After: []byte(fmt.Sprintf(`{"id":%d,"name":"customer %d","pad":%q}`, c, c, strings.Repeat("x", 140)))})
		}
		frame, err := format.AppendTx(nil, tx)
		if err != nil {
			b.Fatal(err)
		}
		f, _, err := format.ParseFrame(frame)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("txChanges/changes=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			for i := 0; i < b.N; i++ {
				if c, ok := txChanges(f.Payload); !ok || c != n {
					b.Fatal(c, ok)
				}
			}
		})
		b.Run(fmt.Sprintf("DecodeTx/changes=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			var got format.Tx
			for i := 0; i < b.N; i++ {
				if err := format.DecodeTx(f.Payload, &got); err != nil || len(got.Changes) != n {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("ParseFrame/changes=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			for i := 0; i < b.N; i++ {
				if _, _, err := format.ParseFrame(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
