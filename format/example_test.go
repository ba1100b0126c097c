package format_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/ferrysync/ferry/format"
)

// A legacy application written in Go commits its transactions through a
// Writer; ferry ship takes the files from there.
func ExampleOpenWriter() {
	dir, err := os.MkdirTemp("", "ferry-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	w, err := format.OpenWriter(dir, "shop", format.WithSync(format.SyncAlways, 0))
	if err != nil {
		log.Fatal(err)
	}
	pos, err := w.Commit(&format.Tx{
		CommitTime: 1_767_225_600_000_000_000,
		ID:         "order-42",
		Changes: []format.Change{
			{Table: "orders", Op: format.OpUpsert, Key: []byte("42"), After: []byte(`{"total":9.5}`)},
			{Table: "order_lines", Op: format.OpInsert, Key: []byte("42/1"), After: []byte(`{"sku":"A1","qty":2}`)},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed at", pos) // segment:offset
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	segs, err := format.ListSegments(dir, "shop")
	if err != nil {
		log.Fatal(err)
	}
	rd, f, err := format.OpenReader(segs[0].Path, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	var tx format.Tx
	for {
		fr, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err) // ErrTornTail, ErrChecksum or ErrCorrupt, with file and offset
		}
		if fr.Type != format.FrameTx {
			continue
		}
		if err := format.DecodeTx(fr.Payload, &tx); err != nil {
			log.Fatal(err)
		}
		for i, c := range tx.Changes {
			fmt.Printf("%d:%d#%d %s %s %s %s\n", rd.Header().Segment, rd.Offset(), i, c.Op, c.Table, c.Key, c.After)
		}
	}
	s, _ := rd.Sealed()
	fmt.Println("sealed, next segment", s.Next)
	// Output:
	// committed at 1:57
	// 1:57#0 upsert orders 42 {"total":9.5}
	// 1:57#1 insert order_lines 42/1 {"sku":"A1","qty":2}
	// sealed, next segment 2
}
