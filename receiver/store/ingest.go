package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
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

// pendingIngest holds the tables of consecutive bulk chunks until they are
// ingested together: an ingestion costs fsyncs of the directory and the
// MANIFEST (~2-3 ms here) whatever it holds, so one per chunk message
// (~5000 rows) capped the rate near 400k rows/s. Each chunk's table is
// written (and synced) when the chunk is applied, straight from its
// decoded rows; they are ingested in one DB.Ingest before anything else
// writes a row (a live change, a chunk through the batch), before the
// commit that holds their positions, and once maxIngestTables are held.
//
// Chunks usually come in key order: while each starts after the last key
// written, they go into the same table (one write stream, one fsync).
type pendingIngest struct {
	paths  []string
	ranges [][2][]byte // each chunk's [first, last] row key
	// The table being written (the last of paths), and its last key.
	w    *sstable.Writer
	last []byte
}

// maxIngestChunks bounds the chunks held for one ingestion.
const maxIngestChunks = 64

func (p *pendingIngest) reset(fs vfs.FS) {
	if p.w != nil {
		p.w.Close()
		p.w = nil
	}
	for _, path := range p.paths {
		fs.Remove(path)
	}
	p.paths, p.ranges = p.paths[:0], p.ranges[:0]
}

// overlaps reports whether [lo, hi] meets a chunk held.
func (p *pendingIngest) overlaps(lo, hi []byte) bool {
	for _, r := range p.ranges {
		if bytes.Compare(lo, r[1]) <= 0 && bytes.Compare(r[0], hi) <= 0 {
			return true
		}
	}
	return false
}

// ingestLoad writes chunk c as a table for ingestion if its key range is
// empty; res.Bulk false means it did not (the caller uses the batch).
func (b *Batch) ingestLoad(c *LoadChunk) (LoadResult, error) {
	chs := c.Tx.Changes
	// The rows in key order (a loader sends them in its database's key
	// order, which need not be the key bytes' order), the last of a key.
	order := b.loadOrder[:0]
	sorted := true
	for i := range chs {
		order = append(order, int32(i))
		if i > 0 && bytes.Compare(chs[i-1].Key, chs[i].Key) >= 0 {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(order, func(x, y int32) int { return bytes.Compare(chs[x].Key, chs[y].Key) })
	}
	b.loadOrder = order
	loKey := appendRowKey(nil, c.Table, chs[order[0]].Key)
	hiKey := appendRowKey(nil, c.Table, chs[order[len(order)-1]].Key)
	p := &b.ing
	if p.overlaps(loKey, hiKey) {
		// Another chunk held meets this one (two loads of a table): it
		// goes in first, and this one is judged against it.
		if err := b.flushIngest(); err != nil {
			return LoadResult{}, err
		}
	}
	empty, err := b.rangeEmpty(loKey, hiKey)
	if err != nil || !empty {
		return LoadResult{}, err
	}
	if err := b.writeTable(c, order, loKey); err != nil {
		b.err = err
		return LoadResult{}, err
	}
	p.ranges = append(p.ranges, [2][]byte{loKey, hiKey})
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
	if len(p.ranges) >= maxIngestChunks {
		if err := b.flushIngest(); err != nil {
			return LoadResult{}, err
		}
	}
	return LoadResult{Applied: len(chs), Bulk: true}, nil
}

// writeTable writes chunk c's rows, in key order (order; lo is the first
// row key), to the table being written if they all come after its last
// key, else to a new one; the row of change i takes change id next+i.
func (b *Batch) writeTable(c *LoadChunk, order []int32, lo []byte) error {
	s, p := b.s, &b.ing
	if p.w != nil && bytes.Compare(lo, p.last) <= 0 {
		if err := p.closeTable(); err != nil {
			return err
		}
	}
	if p.w == nil {
		s.ingestSeq++
		path := s.fs.PathJoin(s.dir, fmt.Sprintf("load-ingest-%06d.sst", s.ingestSeq))
		f, err := bufferedFS{FS: s.fs}.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return fmt.Errorf("store: creating %s: %w", path, err)
		}
		p.paths = append(p.paths, path)
		// Level 1's options (Snappy): an ingested table usually lands in
		// the bottom level and stays there; compressed, it also costs
		// fewer write(2)s, ~15% of the CPU per row uncompressed.
		p.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), s.po.MakeWriterOptions(1, s.db.TableFormat()))
	}
	w := p.w
	chs := c.Tx.Changes
	v := Version{Source: LoadSourcePrefix + c.Load, Segment: c.Chunk, Offset: int64(c.Part)}
	for j, i := range order {
		if j+1 < len(order) && bytes.Equal(chs[i].Key, chs[order[j+1]].Key) {
			continue // a later row of the key wins
		}
		v.Index = int(i)
		b.keyBuf = appendRowKey(b.keyBuf[:0], c.Table, chs[i].Key)
		b.valBuf = appendRow(b.valBuf[:0], &chs[i], &v, c.Tx.CommitTime, b.next+uint64(i))
		if err := w.Set(b.keyBuf, b.valBuf); err != nil {
			return fmt.Errorf("store: writing %s: %w", p.paths[len(p.paths)-1], err)
		}
	}
	p.last = append(p.last[:0], b.keyBuf...)
	return nil
}

// closeTable finishes (and syncs) the table being written.
func (p *pendingIngest) closeTable() error {
	if p.w == nil {
		return nil
	}
	err := p.w.Close()
	p.w = nil
	if err != nil {
		return fmt.Errorf("store: writing %s: %w", p.paths[len(p.paths)-1], err)
	}
	return nil
}

// flushIngest ingests the tables held, if any.
func (b *Batch) flushIngest() error {
	p := &b.ing
	if len(p.paths) == 0 {
		return nil
	}
	if b.err != nil {
		return b.err
	}
	err := p.closeTable()
	if err == nil {
		err = b.s.db.Ingest(context.Background(), p.paths)
	}
	if err != nil {
		err = fmt.Errorf("store: ingesting %d load tables: %w", len(p.paths), err)
		b.err = err
	} else {
		b.s.committed()
	}
	// Ingest linked the files into the store: these names go.
	p.reset(b.s.fs)
	return err
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
