package store

import (
	"bytes"
	"context"
	"errors"
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
// Tables are built on a goroutine of their own (tableWriter), beside the
// applier decoding the next messages: building them (block encoding,
// Snappy, write(2)) was ~70% of the CPU per bulk row.
type pendingIngest struct {
	paths  []string
	ranges [][2][]byte // each chunk's [first, last] row key
	// The writer of the tables; open says a table (the last of paths) is
	// being written, last its last key.
	tw   *tableWriter
	open bool
	last []byte
	// jobs keeps the writer's jobs (their buffers) between ingestions.
	jobs []*tableJob
}

// tableWriter writes sstables from encoded rows on its own goroutine, owned
// by the pendingIngest that starts it and stopped by finish. Jobs come from
// a free list of tableJobs, so at most that many chunks' rows are held.
type tableWriter struct {
	jobs chan *tableJob
	free chan *tableJob
	done chan error
}

// tableJob is one chunk's rows, sorted, encoded: key and value after key
// and value, ends[i] the end of the i-th (keys at even i); path set starts
// a new table there.
type tableJob struct {
	path string
	buf  []byte
	ends []int32
}

const tableJobs = 3

func (s *Store) startTableWriter(jobs []*tableJob) *tableWriter {
	tw := &tableWriter{jobs: make(chan *tableJob), free: make(chan *tableJob, tableJobs), done: make(chan error, 1)}
	for i := range tableJobs {
		if i < len(jobs) {
			tw.free <- jobs[i]
		} else {
			tw.free <- &tableJob{}
		}
	}
	go s.runTableWriter(tw)
	return tw
}

func (s *Store) runTableWriter(tw *tableWriter) {
	var w *sstable.Writer
	var path string
	var err error
	for j := range tw.jobs {
		if err == nil && j.path != "" {
			if w != nil {
				if err = w.Close(); err != nil {
					err = fmt.Errorf("store: writing %s: %w", path, err)
				}
				w = nil
			}
			if err == nil {
				path = j.path
				var f vfs.File
				if f, err = (bufferedFS{FS: s.fs}).Create(path, vfs.WriteCategoryUnspecified); err != nil {
					err = fmt.Errorf("store: creating %s: %w", path, err)
				} else {
					// Level 1's options (Snappy): an ingested table usually
					// lands in the bottom level and stays there; compressed,
					// it also costs fewer write(2)s (uncompressed: ~15% more
					// CPU per row).
					w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), s.po.MakeWriterOptions(1, s.db.TableFormat()))
				}
			}
		}
		if err == nil && w == nil {
			err = errors.New("store: load rows for the table writer before any table")
		}
		start := int32(0)
		for i := 0; i+1 < len(j.ends) && err == nil; i += 2 {
			if err = w.Set(j.buf[start:j.ends[i]], j.buf[j.ends[i]:j.ends[i+1]]); err != nil {
				err = fmt.Errorf("store: writing %s: %w", path, err)
			}
			start = j.ends[i+1]
		}
		j.path, j.buf, j.ends = "", j.buf[:0], j.ends[:0]
		tw.free <- j
	}
	if w != nil {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("store: writing %s: %w", path, cerr)
		}
	}
	tw.done <- err
}

// finish waits for the tables to be written (and synced) and stops the
// writer.
func (tw *tableWriter) finish() error {
	close(tw.jobs)
	return <-tw.done
}

// maxIngestChunks bounds the chunks held for one ingestion.
const maxIngestChunks = 64

func (p *pendingIngest) reset(fs vfs.FS) {
	p.closeTable()
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
		if i > 0 && b.s.rk.compare(chs[i-1].Key, chs[i].Key) >= 0 {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(order, func(x, y int32) int { return b.s.rk.compare(chs[x].Key, chs[y].Key) })
	}
	b.loadOrder = order
	loKey := b.s.rk.appendRow(nil, c.Table, chs[order[0]].Key)
	hiKey := b.s.rk.appendRow(nil, c.Table, chs[order[len(order)-1]].Key)
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

// writeTable hands chunk c's rows, in key order (order; lo is the first
// row key), to the table writer: into the table being written if they all
// come after its last key, else a new one; the row of change i takes change
// id next+i.
func (b *Batch) writeTable(c *LoadChunk, order []int32, lo []byte) error {
	s, p := b.s, &b.ing
	if p.tw == nil {
		p.tw = s.startTableWriter(p.jobs)
	}
	j := <-p.tw.free
	if !p.open || bytes.Compare(lo, p.last) <= 0 {
		s.ingestSeq++
		j.path = s.fs.PathJoin(s.dir, fmt.Sprintf("load-ingest-%06d.sst", s.ingestSeq))
		p.paths = append(p.paths, j.path)
		p.open = true
	}
	chs := c.Tx.Changes
	v := Version{Source: LoadSourcePrefix + c.Load, Segment: c.Chunk, Offset: int64(c.Part)}
	buf, ends := j.buf, j.ends
	kstart := 0
	for n, i := range order {
		if n+1 < len(order) && bytes.Equal(chs[i].Key, chs[order[n+1]].Key) {
			continue // a later row of the key wins
		}
		v.Index = int(i)
		kstart = len(buf)
		buf = b.s.rk.appendRow(buf, c.Table, chs[i].Key)
		ends = append(ends, int32(len(buf)))
		buf = appendRow(buf, &chs[i], &v, c.Tx.CommitTime, b.next+uint64(i))
		ends = append(ends, int32(len(buf)))
	}
	p.last = append(p.last[:0], buf[kstart:ends[len(ends)-2]]...)
	j.buf, j.ends = buf, ends
	p.tw.jobs <- j
	return nil
}

// closeTable waits for the tables handed to the writer to be written and
// synced, and stops it.
func (p *pendingIngest) closeTable() error {
	if p.tw == nil {
		return nil
	}
	err := p.tw.finish()
	// Every job is back in the free list: keep them (and their buffers,
	// up to a chunk's size) for the next writer.
	p.jobs = p.jobs[:0]
	for range tableJobs {
		j := <-p.tw.free
		if cap(j.buf) > maxRetainedBatch {
			j.buf, j.ends = nil, nil
		}
		p.jobs = append(p.jobs, j)
	}
	p.tw, p.open = nil, false
	return err
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
