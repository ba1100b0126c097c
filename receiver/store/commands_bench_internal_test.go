package store

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkReadCommands reads both records of 100 new ids (a submission's
// check) among 100,000 commands in the memtable: a Get per key, as the
// store did, against readCommands.
func BenchmarkReadCommands(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	id := func() string { r := make([]byte, 16); rand.Read(r); return hex.EncodeToString(r) }
	val := make([]byte, 100)
	bt := s.db.NewBatch()
	for range 100000 {
		x := id()
		for _, k := range [][]byte{commandKey(cmdSubmitted, x), commandKey(cmdOutcome, x), []byte("r" + x)} {
			if err := bt.Set(k, val, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := bt.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = id()
	}
	b.Run("get", func(b *testing.B) {
		for range b.N {
			for _, id := range ids {
				for _, kind := range []byte{cmdSubmitted, cmdOutcome} {
					if _, _, err := s.getMeta(commandKey(kind, id)); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
	b.Run("readCommands", func(b *testing.B) {
		for range b.N {
			if err := s.readCommands(ids, []byte{cmdOutcome, cmdSubmitted}, func(byte, int, []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}
