package tail

import (
	"fmt"
	"testing"

	"github.com/ferrysync/ferry/format"
)

// FuzzTxChanges checks txChanges (the change count read without decoding
// the changes) against format.DecodeTx, whose encoding it duplicates: on a
// payload DecodeTx accepts it returns the same count, and on any payload it
// never panics.
func FuzzTxChanges(f *testing.F) {
	for _, n := range []int{1, 3, 200} {
		tx := &format.Tx{CommitTime: 7, ID: "tx-1", Origin: "db"}
		for c := 0; c < n; c++ {
			tx.Changes = append(tx.Changes, format.Change{Table: "t", Op: format.OpUpsert, Key: []byte(fmt.Sprint(c)), After: []byte(`{"a":1}`)})
		}
		frame, err := format.AppendTx(nil, tx)
		if err != nil {
			f.Fatal(err)
		}
		fr, _, err := format.ParseFrame(frame)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte(nil), fr.Payload...))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 9))
	f.Fuzz(func(t *testing.T, p []byte) {
		c, ok := txChanges(p)
		var tx format.Tx
		if err := format.DecodeTx(p, &tx); err == nil {
			if !ok || c != len(tx.Changes) {
				t.Fatalf("txChanges = %d, %v; DecodeTx decoded %d changes", c, ok, len(tx.Changes))
			}
		}
	})
}
