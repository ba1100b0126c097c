package format_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// A transaction far larger than MaxTxHeaderLen: its count read from the
// first bytes only, as a shipper reading a huge frame in pieces does.
func TestTxChangeCountFromPrefix(t *testing.T) {
	for _, n := range []int{1, 4097, 20000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tx := &format.Tx{CommitTime: 1, ID: "big", Origin: "svc"}
			for i := 0; i < n; i++ {
				tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpDelete, Key: []byte(fmt.Sprint(i))})
			}
			frame, err := format.AppendTx(nil, tx)
			if err != nil {
				t.Fatal(err)
			}
			payload := frame[format.FrameHeaderLen:]
			head := payload[:min(len(payload), format.MaxTxHeaderLen)]
			if got, err := format.TxChangeCount(head, len(payload)); err != nil || got != n {
				t.Fatalf("TxChangeCount = %d, %v; want %d", got, err, n)
			}
			// The same count claimed by a payload too short to hold it.
			if _, err := format.TxChangeCount(head, len(head)); n > 1000 && !errors.Is(err, format.ErrCorrupt) {
				t.Fatalf("count over what the payload holds: err %v, want ErrCorrupt", err)
			}
		})
	}
}

func BenchmarkTxChangeCount(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		tx := &format.Tx{CommitTime: 1, ID: "tx-1"}
		for i := 0; i < n; i++ {
			tx.Changes = append(tx.Changes, format.Change{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: make([]byte, 180)})
		}
		frame, _ := format.AppendTx(nil, tx)
		p := frame[format.FrameHeaderLen:]
		b.Run(fmt.Sprintf("changes=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if c, err := format.TxChangeCount(p, len(p)); err != nil || c != n {
					b.Fatal(c, err)
				}
			}
		})
	}
}
