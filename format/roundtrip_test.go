package format_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/ferrysync/ferry/format"
)

func writeTxs(t *testing.T, dir string, n int, opts ...format.WriterOption) []format.Position {
	t.Helper()
	w, err := format.OpenWriter(dir, "shop", opts...)
	if err != nil {
		t.Fatal(err)
	}
	var pos []format.Position
	for i := 0; i < n; i++ {
		tx := format.Tx{CommitTime: int64(i + 1), ID: fmt.Sprint("t", i), Changes: []format.Change{
			{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: []byte(fmt.Sprintf(`{"id":%d}`, i))},
			{Table: "lines", Op: format.OpDelete, Key: []byte(fmt.Sprint(i, "-1")), Before: []byte(`{}`)},
		}}
		p, err := w.Commit(&tx)
		if err != nil {
			t.Fatal(err)
		}
		pos = append(pos, p)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return pos
}

func readAll(t *testing.T, path string) (txs []format.Tx, err error) {
	t.Helper()
	rd, f, err := format.OpenReader(path, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for {
		fr, err := rd.Next()
		if err == io.EOF {
			return txs, nil
		}
		if err != nil {
			return txs, err
		}
		if fr.Type == format.FrameTx {
			var tx format.Tx
			if err := format.DecodeTx(fr.Payload, &tx); err != nil {
				return txs, err
			}
			tx.Changes = append([]format.Change(nil), tx.Changes...)
			txs = append(txs, tx)
		}
	}
}

func TestWriterRoundTrip(t *testing.T) {
	dir := t.TempDir()
	pos := writeTxs(t, dir, 1000, format.WithSync(format.SyncNone, 0))
	segs, err := format.ListSegments(dir, "")
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	txs, err := readAll(t, segs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(txs), 1000; got != want {
		t.Fatalf("read %d txs, want %d", got, want)
	}
	if got, want := string(txs[999].Changes[0].Key), "999"; got != want {
		t.Fatalf("key %q want %q", got, want)
	}
	if pos[0].Offset != int64(format.HeaderLen(format.Version, "shop")) {
		t.Fatalf("first pos %v", pos[0])
	}
	// A second writer starts segment 2.
	writeTxs(t, dir, 1)
	segs, _ = format.ListSegments(dir, "shop")
	if len(segs) != 2 || segs[1].Segment != 2 {
		t.Fatalf("segments after restart: %v", segs)
	}
}

func TestTornTailAndCorruption(t *testing.T) {
	dir := t.TempDir()
	pos := writeTxs(t, dir, 10, format.WithSync(format.SyncAlways, 0))
	segs, _ := format.ListSegments(dir, "")
	path := segs[0].Path
	data, _ := os.ReadFile(path)
	// Truncate inside the last tx frame (drop the seal and part of frame 9).
	cut := pos[9].Offset + 5
	os.WriteFile(path, data[:cut], 0o644)
	txs, err := readAll(t, path)
	var pe *format.PositionError
	if !errors.Is(err, format.ErrTornTail) || !errors.As(err, &pe) || pe.Offset != pos[9].Offset || len(txs) != 9 {
		t.Fatalf("truncated: %d txs, err %v", len(txs), err)
	}
	// Flip a byte in frame 4.
	bad := append([]byte(nil), data...)
	bad[pos[4].Offset+12] ^= 0xff
	os.WriteFile(path, bad, 0o644)
	txs, err = readAll(t, path)
	if !errors.Is(err, format.ErrChecksum) || !errors.As(err, &pe) || pe.Offset != pos[4].Offset || len(txs) != 4 {
		t.Fatalf("corrupt: %d txs, err %v", len(txs), err)
	}
}
