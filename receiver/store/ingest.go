package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Bulk loading. A load chunk whose key range [first key, last key] holds no
// key in the store (Pebble, the commit in flight, the batch being filled)
// cannot meet any row under the merge rule: every row is applied. Its rows
// are then written, sorted by key, to an sstable that Pebble ingests
// (DB.Ingest: linked into the LSM, usually straight into its bottom level)
// instead of going through the memtable, flush and compactions.
//
// The change log entry, the change id marks and the load's position still
// go in the batch, committed after the ingestion. The ingested table is
// durable at once (the MANIFEST is synced), the batch only when flushed, so
// a crash between them leaves the table's rows without their position: the
// chunk is read again, finds its range holding rows of its own load (no
// longer empty, so through the batch) and rewrites them under rule 4, with
// the same change ids (ids are assigned in stream order and everything
// before the chunk is re-applied first). Nothing else can be in the range:
// it held nothing before the ingestion, and what followed it was lost with
// the batch.

// bulkMinRows: smaller chunks go through the batch (an ingestion costs a
// MANIFEST write and fsyncs whatever its size).
const bulkMinRows = 256

// WithBulkLoad turns sstable ingestion of load chunks into empty key
// ranges on or off (default on).
func WithBulkLoad(on bool) Option {
	return func(o *options) error { o.noBulk = !on; return nil }
}

// rangeEmpty reports whether no row key in [lo, hi] is held by the store,
// the commit in flight or the work being filled.
func (b *Batch) rangeEmpty(lo, hi []byte) (bool, error) {
	w := b.w
	for _, r := range w.rows {
		k := w.rowBuf[r.koff:r.kend]
		if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0 {
			return false, nil
		}
	}
	if f := b.flying; f != nil && len(f.rows) > 0 {
		buf := f.rowBuf
		j := sort.Search(len(f.rows), func(i int) bool {
			r := f.rows[i]
			return bytes.Compare(buf[r.koff:r.kend], lo) >= 0
		})
		if j < len(f.rows) && bytes.Compare(buf[f.rows[j].koff:f.rows[j].kend], hi) <= 0 {
			return false, nil
		}
	}
	upper := append(append([]byte(nil), hi...), 0)
	it, err := b.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: upper})
	if err != nil {
		return false, fmt.Errorf("store: checking a load chunk's key range: %w", err)
	}
	empty := !it.First()
	if err := it.Close(); err != nil {
		return false, fmt.Errorf("store: checking a load chunk's key range: %w", err)
	}
	return empty, nil
}

// ingestLoad writes chunk c as an ingested sstable if its key range is
// empty; res.Bulk false means it did not (the caller uses the batch).
func (b *Batch) ingestLoad(c *LoadChunk) (LoadResult, error) {
	chs := c.Tx.Changes
	lo, hi := chs[0].Key, chs[0].Key
	for i := 1; i < len(chs); i++ {
		if k := chs[i].Key; bytes.Compare(k, lo) < 0 {
			lo = k
		} else if bytes.Compare(k, hi) > 0 {
			hi = k
		}
	}
	loKey, hiKey := appendRowKey(nil, c.Table, lo), appendRowKey(nil, c.Table, hi)
	empty, err := b.rangeEmpty(loKey, hiKey)
	if err != nil || !empty {
		return LoadResult{}, err
	}
	// Rows, sorted by key (the loader sends them in its database's key
	// order, which need not be the key bytes' order), last write of a key.
	v := Version{Source: LoadSourcePrefix + c.Load, Segment: c.Chunk, Offset: int64(c.Part)}
	buf, rows := b.bulkBuf[:0], b.bulkRows[:0]
	first := b.next
	for i := range chs {
		ch := &chs[i]
		v.Index = i
		start := len(buf)
		buf = appendRowKey(buf, c.Table, ch.Key)
		kend := len(buf)
		buf = appendRow(buf, ch, &v, c.Tx.CommitTime, first+uint64(i))
		rows = append(rows, rowOp{koff: int32(start), kend: int32(kend), vend: int32(len(buf)), seq: int32(i)})
	}
	cl := len(loKey) - len(lo) // the table prefix
	for i := range rows {
		var pfx [8]byte
		copy(pfx[:], buf[int(rows[i].koff)+cl:rows[i].kend])
		rows[i].pfx = binary.BigEndian.Uint64(pfx[:])
	}
	rows, b.bulkTmp = sortRows(rows, b.bulkTmp, func(r rowOp) []byte { return buf[int(r.koff)+cl : r.kend] })
	b.bulkBuf, b.bulkRows = buf, rows

	b.s.ingestSeq++
	path := b.s.fs.PathJoin(b.s.dir, fmt.Sprintf("load-ingest-%06d.sst", b.s.ingestSeq))
	if err := b.s.writeTable(path, buf, rows); err != nil {
		return LoadResult{}, err
	}
	if err := b.s.db.Ingest(context.Background(), []string{path}); err != nil {
		b.s.fs.Remove(path)
		return LoadResult{}, fmt.Errorf("store: ingesting load %s chunk %d part %d: %w", c.Load, c.Chunk, c.Part, err)
	}
	// Ingest linked the file into the store: the name here goes.
	if err := b.s.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.s.log.Warn("store: removing an ingested table's temporary name", "path", path, "err", err)
	}
	// The batch: log entry, ids, table versions.
	e := b.logLoad(c)
	for range chs {
		b.takeID()
	}
	tv := b.tver[c.Table]
	for i := range chs {
		b.noteTableVer(c.Table, &tv, chs[i].Version)
	}
	e.changes += len(chs)
	b.changes += len(chs)
	b.w.loadRows += len(chs)
	b.s.committed()
	return LoadResult{Applied: len(chs), Bulk: true}, nil
}

// writeTable writes the sorted rows (the last write of each key) to a new
// sstable at path, synced.
func (s *Store) writeTable(path string, buf []byte, rows []rowOp) error {
	f, err := bufferedFS{FS: s.fs}.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("store: creating %s: %w", path, err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), s.po.MakeWriterOptions(0, s.db.TableFormat()))
	for i, r := range rows {
		k := buf[r.koff:r.kend]
		if i+1 < len(rows) && bytes.Equal(k, buf[rows[i+1].koff:rows[i+1].kend]) {
			continue
		}
		if err := w.Set(k, buf[r.kend:r.vend]); err != nil {
			w.Close()
			s.fs.Remove(path)
			return fmt.Errorf("store: writing %s: %w", path, err)
		}
	}
	if err := w.Close(); err != nil {
		s.fs.Remove(path)
		return fmt.Errorf("store: writing %s: %w", path, err)
	}
	return nil
}

// removeIngestLeftovers removes temporary tables a crash left before
// their ingestion (their chunks are applied again from the stream).
func (s *Store) removeIngestLeftovers() error {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return fmt.Errorf("store: listing %s: %w", s.dir, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "load-ingest-") && strings.HasSuffix(n, ".sst") {
			if err := s.fs.Remove(s.fs.PathJoin(s.dir, n)); err != nil {
				return fmt.Errorf("store: removing a load table left by a crash: %w", err)
			}
		}
	}
	return nil
}
