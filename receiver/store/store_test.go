package store_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

func tx(keys ...string) *format.Tx {
	t := &format.Tx{CommitTime: time.Now().UnixNano()}
	for _, k := range keys {
		op := format.OpUpsert
		if k[0] == '-' {
			op, k = format.OpDelete, k[1:]
		}
		t.Changes = append(t.Changes, format.Change{Table: "t", Op: op, Key: []byte(k), After: []byte(`{"k":"` + k + `"}`)})
	}
	return t
}

// apply applies a transaction of keys at off and returns the frame's end.
func apply(t *testing.T, b *store.Batch, seg uint64, off int64, seq uint64, keys ...string) int64 {
	t.Helper()
	tx := tx(keys...)
	frame, err := format.AppendTx(nil, tx)
	if err != nil {
		t.Fatal(err)
	}
	end := off + int64(len(frame))
	if err := b.ApplyTx("s", seg, off, end, seq, tx, frame); err != nil {
		t.Fatalf("ApplyTx at %d: %v", off, err)
	}
	return end
}

func open(t *testing.T, fs vfs.FS) *store.Store {
	t.Helper()
	st, err := store.Open("db", store.WithFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestApplyReopenAndRead(t *testing.T) {
	fs := vfs.NewMem()
	st := open(t, fs)
	b := st.NewBatch()
	off := int64(45)
	var starts []int64
	for i, keys := range [][]string{{"a", "b"}, {"c"}, {"-a", "d", "b"}} {
		starts = append(starts, off)
		off = apply(t, b, 1, off, uint64(i+1), keys...)
	}
	// The same frame again is refused: it would apply twice.
	again := tx("c")
	frame, _ := format.AppendTx(nil, again)
	if err := b.ApplyTx("s", 1, starts[1], starts[1]+int64(len(frame)), 9, again, frame); !errors.Is(err, store.ErrNotNext) {
		t.Fatalf("re-applying a frame: %v, want ErrNotNext", err)
	}
	hb := time.Now().Add(time.Hour).UnixNano()
	if err := b.Advance("s", 2, 45, 62, 4, hb, false); err != nil { // next segment, heartbeat
		t.Fatal(err)
	}
	b.SetCursor(store.StreamCursor{Seq: 4, Created: 77})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	check := func(st *store.Store) {
		t.Helper()
		if _, ok, _ := st.Get("t", []byte("a")); ok {
			t.Fatal("deleted row a still there")
		}
		row, ok, err := st.Get("t", []byte("b"))
		if err != nil || !ok || row.Version.Offset != starts[2] || row.Version.Index != 2 || row.ChangeID != 6 {
			t.Fatalf("row b: %+v %v %v", row, ok, err)
		}
		p := st.Position("s")
		if p.Segment != 2 || p.Offset != 62 || p.Changes != 6 || p.Transactions != 3 || p.AliveAt != hb || p.StreamSeq != 4 {
			t.Fatalf("position %+v", p)
		}
		if c := st.Cursor(); c.Seq != 4 || c.Created != 77 {
			t.Fatalf("cursor %+v", c)
		}
		if first, last := st.ChangeRange(); first != 1 || last != 6 {
			t.Fatalf("change range %d..%d", first, last)
		}
		rows, more, err := st.Scan("t", nil, nil, 10)
		if err != nil || more || len(rows) != 3 || string(rows[0].Key) != "b" || string(rows[2].Key) != "d" {
			t.Fatalf("scan: %d rows, more=%v, err=%v", len(rows), more, err)
		}
		rows, more, _ = st.Scan("t", nil, []byte("b"), 1)
		if len(rows) != 1 || string(rows[0].Key) != "c" || !more {
			t.Fatalf("scan after b: %+v more=%v", rows, more)
		}
		cs, err := st.Changes(3, 10)
		if err != nil || len(cs) != 3 || cs[0].ID != 4 || cs[0].Op != format.OpDelete || string(cs[0].Key) != "a" ||
			cs[2].Version.Offset != starts[2] || cs[2].Version.Index != 2 || string(cs[2].After) != `{"k":"b"}` {
			t.Fatalf("changes after 3: %+v %v", cs, err)
		}
	}
	check(st)
	st.Close()
	st = open(t, fs)
	defer st.Close()
	check(st)
}

func TestTrim(t *testing.T) {
	st := open(t, vfs.NewMem())
	defer st.Close()
	b := st.NewBatch()
	defer b.Close()
	off := int64(45)
	for i := 0; i < 100; i++ {
		off = apply(t, b, 1, off, 1, fmt.Sprint(i))
		if i%10 == 9 { // one change log entry per commit: 10 changes each
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The floor (a webhook at 35) wins over the count; whole entries go.
	if n, err := st.Trim(10, 0, 35); err != nil || n != 30 {
		t.Fatalf("Trim: %d, %v; want 30", n, err)
	}
	if _, err := st.Changes(10, 5); !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("reading trimmed changes: %v, want ErrTrimmed", err)
	}
	if cs, err := st.Changes(30, 5); err != nil || cs[0].ID != 31 {
		t.Fatalf("changes after 30: %v", err)
	}
	if n, _ := st.Trim(15, 0, ^uint64(0)); n != 50 { // 31..80: keeps the entry holding 86
		t.Fatalf("Trim by count removed %d, want 50", n)
	}
	if first, last := st.ChangeRange(); first != 81 || last != 100 {
		t.Fatalf("range %d..%d, want 81..100", first, last)
	}
	time.Sleep(20 * time.Millisecond)
	if n, _ := st.Trim(0, 10*time.Millisecond, ^uint64(0)); n != 20 {
		t.Fatalf("Trim by age removed %d, want 20", n)
	}
	if cs, err := st.Changes(100, 10); err != nil || len(cs) != 0 {
		t.Fatalf("changes after the last: %v %v", cs, err)
	}
	// Rows survive the trimming of their changes.
	if _, ok, _ := st.Get("t", []byte("5")); !ok {
		t.Fatal("row lost with its change")
	}
}

func TestSortedRowsKeepLastWrite(t *testing.T) {
	st := open(t, vfs.NewMem())
	defer st.Close()
	b := st.NewBatch()
	defer b.Close()
	// Within one batch: z, a, z deleted, a again, z again.
	steps := [][]string{{"z", "a"}, {"-z"}, {"a"}, {"z"}, {"-a"}}
	off := int64(45)
	for _, s := range steps {
		off = apply(t, b, 1, off, 1, s...)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.Get("t", []byte("a")); ok {
		t.Fatal("a: deleted last, but present")
	}
	row, ok, _ := st.Get("t", []byte("z"))
	if !ok || row.ChangeID != 5 {
		t.Fatalf("z: %+v ok=%v, want the write of change 5", row, ok)
	}
}

// TestCrashKeepsBatchPrefix commits many batches to a store without a WAL
// (the default), takes crash images of its file system at many points
// (only synced data survives, unsynced writes survive at random) and opens
// each: the source's position must always match the rows and the change
// log exactly, batch for batch, whatever was lost.
func TestCrashKeepsBatchPrefix(t *testing.T) {
	// Small change log files: new files (and their directory entries)
	// between flushes must be durable too.
	for _, size := range []int64{64 << 20, 4 << 10} {
		t.Run(fmt.Sprintf("LogFile%dK", size>>10), func(t *testing.T) { testCrashKeepsBatchPrefix(t, size) })
	}
}

func testCrashKeepsBatchPrefix(t *testing.T, logFileSize int64) {
	fs := vfs.NewCrashableMem()
	st, err := store.Open("db", store.WithFS(fs), store.WithMemTableSize(1<<20), store.WithFlushInterval(time.Hour), store.WithLogFileSize(logFileSize))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	pad := strings.Repeat("x", 2000)
	off := int64(45)
	var lost, kept int
	for i := 0; i < 400; i++ {
		b := st.NewBatch()
		// Batch i: one transaction setting "n" to i and 20 other keys.
		keys := []string{"n"}
		for k := 0; k < 20; k++ {
			keys = append(keys, fmt.Sprintf("k%d-%d", i, k))
		}
		txn := tx(keys...)
		txn.Changes[0].After = fmt.Appendf(nil, `{"i":%d,"pad":%q}`, i, pad)
		frame, err := format.AppendTx(nil, txn)
		if err != nil {
			t.Fatal(err)
		}
		end := off + int64(len(frame))
		if err := b.ApplyTx("s", 1, off, end, uint64(i+1), txn, frame); err != nil {
			t.Fatal(err)
		}
		off = end
		b.SetCursor(store.StreamCursor{Seq: uint64(i + 1)})
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Close()
		if i%25 != 24 {
			continue
		}
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(rng.Uint64(), 1))})
		got, err := store.Open("db", store.WithFS(crashed), store.WithLogFileSize(logFileSize))
		if err != nil {
			t.Fatalf("opening the crash image after batch %d: %v", i, err)
		}
		p := got.Position("s")
		n := int(p.Transactions) // batches that survived
		if n < i+1 {
			lost++
		}
		if n > 0 {
			kept++
		}
		if p.Changes != uint64(21*n) || got.Cursor().Seq != uint64(n) {
			t.Fatalf("crash after batch %d: position %+v, cursor %+v: not a batch boundary", i, p, got.Cursor())
		}
		if _, last := got.ChangeRange(); last != uint64(21*n) {
			t.Fatalf("crash after batch %d: %d batches survived but the last change id is %d", i, n, last)
		}
		row, ok, err := got.Get("t", []byte("n"))
		if n == 0 {
			if ok || err != nil {
				t.Fatalf("crash after batch %d: nothing survived but row n = %v, %v", i, ok, err)
			}
		} else if err != nil || !ok || !strings.HasPrefix(string(row.Value), fmt.Sprintf(`{"i":%d,`, n-1)) || row.ChangeID != uint64(21*(n-1)+1) {
			t.Fatalf("crash after batch %d: %d batches survived but row n = %.20q (change %d), %v, %v", i, n, row.Value, row.ChangeID, ok, err)
		}
		for k := 0; k < 20; k++ {
			_, ok, err := got.Get("t", []byte(fmt.Sprintf("k%d-%d", n-1, k)))
			if n > 0 && (!ok || err != nil) {
				t.Fatalf("crash after batch %d: row k%d-%d of the last surviving batch is missing: %v", i, n-1, k, err)
			}
			_, ok, _ = got.Get("t", []byte(fmt.Sprintf("k%d-%d", n, k)))
			if ok {
				t.Fatalf("crash after batch %d: row k%d-%d of a lost batch is present", i, n, k)
			}
		}
		if ch, err := got.Changes(uint64(21*n)-min(uint64(21*n), 21), 100); err != nil || len(ch) != min(21, 21*n) {
			t.Fatalf("crash after batch %d: the change log's last batch holds %d changes, want %d: %v", i, len(ch), min(21, 21*n), err)
		}
		if err := got.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("crash images: %d lost batches, %d kept some", lost, kept)
	// The test must have seen both: crash images that lost the memtable's
	// batches, and images that kept flushed ones.
	if lost == 0 || kept == 0 {
		t.Fatalf("crash images: %d lost batches, %d kept some: the test did not exercise both", lost, kept)
	}
	// A clean close keeps everything.
	st = open(t, fs)
	defer st.Close()
	if p := st.Position("s"); p.Transactions != 400 {
		t.Fatalf("after a clean close: %d transactions, want 400", p.Transactions)
	}
	if cs, err := st.Changes(0, 100000); err != nil || len(cs) != 400*21 {
		t.Fatalf("after a clean close: %d changes in the log, %v; want %d", len(cs), err, 400*21)
	}
	if files, _ := fs.List("db/changelog"); logFileSize < 1<<20 && len(files) < 10 {
		t.Fatalf("%d change log files with %d-byte files: the test did not rotate", len(files), logFileSize)
	}
}

// TestPipelinedCommits applies the same transactions to two stores, one
// committing each group synchronously and one with CommitAsync (the next
// group filled while the last one commits), while a reader checks that every
// commit it sees is whole. Rows, positions, change ids and change log must be
// identical; Discard keeps the commit in flight and drops only the open batch.
func TestPipelinedCommits(t *testing.T) {
	sync, async := open(t, vfs.NewMem()), open(t, vfs.NewMem())
	defer sync.Close()
	defer async.Close()
	bs, ba := sync.NewBatch(), async.NewBatch()
	defer bs.Close()
	defer ba.Close()

	// The reader: every group sets "g" and its keys "gN-*" in one commit, so
	// whenever "g" says N, all keys of group N are there.
	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		defer close(readerErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			row, ok, err := async.Get("t", []byte("g"))
			if err != nil || !ok {
				continue
			}
			g := strings.TrimSuffix(strings.TrimPrefix(string(row.Value), `{"k":"`), `"}`)
			for k := 0; k < 30; k++ {
				if _, ok, _ := async.Get("t", []byte(fmt.Sprintf("%s-%d", g, k))); !ok {
					readerErr <- fmt.Errorf("commit seen in part: %s set but %s-%d missing", g, g, k)
					return
				}
			}
		}
	}()

	offS, offA := int64(45), int64(45)
	for g := 0; g < 60; g++ {
		keys := []string{fmt.Sprintf("g%d", g)}
		for k := 0; k < 30; k++ {
			keys = append(keys, fmt.Sprintf("g%d-%d", g, k))
		}
		// "g" last, holding the group's name (tx() uses the key as value).
		for _, b := range []*store.Batch{bs, ba} {
			off := &offS
			if b == ba {
				off = &offA
			}
			*off = apply(t, b, 1, *off, uint64(g+1), keys...)
			tx := &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte("g"), After: []byte(`{"k":"g` + fmt.Sprint(g) + `"}`)}}}
			frame, _ := format.AppendTx(nil, tx)
			end := *off + int64(len(frame))
			if err := b.ApplyTx("s", 1, *off, end, uint64(g+1), tx, frame); err != nil {
				t.Fatal(err)
			}
			*off = end
			b.SetCursor(store.StreamCursor{Seq: uint64(g + 1)})
		}
		if err := bs.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := ba.CommitAsync(); err != nil {
			t.Fatal(err)
		}
		// The batch's position already counts the commit in flight.
		if p := ba.Position("s"); p.Offset != offA {
			t.Fatalf("group %d: batch position %d while the commit is in flight, want %d", g, p.Offset, offA)
		}
	}
	// An open batch discarded after a commit in flight: the commit stays.
	apply(t, ba, 1, offA, 99, "dropped")
	ba.Discard()
	close(stop)
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := async.Get("t", []byte("dropped")); ok {
		t.Fatal("a discarded change is in the store")
	}
	if ps, pa := sync.Position("s"), async.Position("s"); ps.Offset != pa.Offset || ps.Changes != pa.Changes || ps.Transactions != pa.Transactions {
		t.Fatalf("positions differ: sync %+v, pipelined %+v", ps, pa)
	}
	if sync.Cursor() != async.Cursor() {
		t.Fatalf("cursors differ: %+v vs %+v", sync.Cursor(), async.Cursor())
	}
	fs, ls := sync.ChangeRange()
	fa, la := async.ChangeRange()
	if fs != fa || ls != la || ls != 60*32 {
		t.Fatalf("change ranges differ: %d..%d vs %d..%d (want ..%d)", fs, ls, fa, la, 60*32)
	}
	cs, err1 := sync.Changes(0, 5000)
	ca, err2 := async.Changes(0, 5000)
	if err1 != nil || err2 != nil || len(cs) != len(ca) {
		t.Fatalf("change logs: %d (%v) vs %d (%v)", len(cs), err1, len(ca), err2)
	}
	for i := range cs {
		if cs[i].ID != ca[i].ID || string(cs[i].Key) != string(ca[i].Key) || cs[i].Version != ca[i].Version {
			t.Fatalf("change %d differs: %+v vs %+v", i, cs[i], ca[i])
		}
	}
	rs, _, _ := sync.Scan("t", nil, nil, 5000)
	ra, _, _ := async.Scan("t", nil, nil, 5000)
	if len(rs) != len(ra) || len(rs) != 60*31+1 {
		t.Fatalf("rows: %d vs %d, want %d", len(rs), len(ra), 60*31+1)
	}
	for i := range rs {
		if string(rs[i].Key) != string(ra[i].Key) || rs[i].ChangeID != ra[i].ChangeID || string(rs[i].Value) != string(ra[i].Value) {
			t.Fatalf("row %d differs: %+v vs %+v", i, rs[i], ra[i])
		}
	}
}

// logFiles lists the change log's files in a store on fs.
func logFiles(t *testing.T, fs vfs.FS) []string {
	t.Helper()
	names, err := fs.List("db/changelog")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// commitKeys applies n one-change transactions, committing every per, from
// offset off of segment 1; it returns the offset after the last.
func commitKeys(t *testing.T, b *store.Batch, off int64, from, n, per int) int64 {
	t.Helper()
	for i := from; i < from+n; i++ {
		off = apply(t, b, 1, off, uint64(i+1), fmt.Sprintf("k%04d", i))
		if (i+1)%per == 0 {
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return off
}

// TestChangeLogFiles: the change log rolls over to new files, trimming
// removes the files it no longer needs (never the one being written), and
// the log reads the same after a reopen and from a checkpoint.
func TestChangeLogFiles(t *testing.T) {
	fs := vfs.NewMem()
	st, err := store.Open("db", store.WithFS(fs), store.WithLogFileSize(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	off := commitKeys(t, b, 45, 0, 600, 20)
	files := logFiles(t, fs)
	if len(files) < 4 {
		t.Fatalf("%d change log files after 600 changes in 4 KiB files: %v", len(files), files)
	}
	all, err := st.Changes(0, 1000)
	if err != nil || len(all) != 600 {
		t.Fatalf("reading the log across %d files: %d changes, %v", len(files), len(all), err)
	}
	for i, c := range all {
		if c.ID != uint64(i+1) || string(c.Key) != fmt.Sprintf("k%04d", i) {
			t.Fatalf("change %d: id %d key %q", i, c.ID, c.Key)
		}
	}
	// Keep the last 100: the files holding only older changes go.
	n, err := st.Trim(100, 0, ^uint64(0))
	if err != nil || n < 400 {
		t.Fatalf("Trim: %d, %v", n, err)
	}
	kept := logFiles(t, fs)
	if len(kept) >= len(files) || len(kept) == 0 {
		t.Fatalf("after trimming %d of 600 changes, files %v (were %v)", n, kept, files)
	}
	first, _ := st.ChangeRange()
	if first != n+1 {
		t.Fatalf("log starts at %d after trimming %d", first, n)
	}
	tail, err := st.Changes(first-1, 1000)
	if err != nil || len(tail) != int(600-n) || tail[0].ID != first {
		t.Fatalf("after the trim: %d changes from %d, %v", len(tail), first, err)
	}
	// Trimming everything keeps the file being written.
	off = commitKeys(t, b, off, 600, 40, 20)
	if _, err := st.Trim(1, 0, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if len(logFiles(t, fs)) == 0 {
		t.Fatal("the trim removed the file being written")
	}
	if err := st.Checkpoint("ck"); err != nil {
		t.Fatal(err)
	}
	first, _ = st.ChangeRange()
	want, err := st.Changes(first-1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"db", "ck"} {
		st, err := store.Open(dir, store.WithFS(fs), store.WithLogFileSize(4<<10))
		if err != nil {
			t.Fatalf("reopening %s: %v", dir, err)
		}
		got, err := st.Changes(first-1, 1000)
		if err != nil || !slices.EqualFunc(got, want, func(a, b store.Change) bool { return a.ID == b.ID && string(a.After) == string(b.After) }) {
			t.Fatalf("%s: %d changes (%v), want %d", dir, len(got), err, len(want))
		}
		// Appending goes on after a reopen.
		b := st.NewBatch()
		commitKeys(t, b, off, 640, 20, 20)
		if cs, err := st.Changes(640, 100); err != nil || len(cs) != 20 || cs[0].ID != 641 {
			t.Fatalf("%s: appending after a reopen: %d changes, %v", dir, len(cs), err)
		}
		b.Close()
		st.Close()
	}
}

// TestChangeLogDamage: a change log file that lost its end is refused at
// open, a corrupt entry is reported with its file and offset when read,
// and files no index record reaches (a crash between writing an entry and
// its commit) are removed at open.
func TestChangeLogDamage(t *testing.T) {
	var end int64
	setup := func(t *testing.T) (vfs.FS, string) {
		fs := vfs.NewMem()
		st := open(t, fs)
		b := st.NewBatch()
		end = commitKeys(t, b, 45, 0, 50, 10)
		b.Close()
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		files := logFiles(t, fs)
		if len(files) != 1 {
			t.Fatalf("files %v", files)
		}
		return fs, "db/changelog/" + files[0]
	}
	t.Run("Truncated", func(t *testing.T) {
		fs, path := setup(t)
		fi, _ := fs.Stat(path)
		f, _ := fs.Open(path)
		data := make([]byte, fi.Size()-1)
		f.ReadAt(data, 0)
		f.Close()
		g, _ := fs.Create(path, vfs.WriteCategoryUnspecified)
		g.Write(data)
		g.Close()
		_, err := store.Open("db", store.WithFS(fs))
		if !errors.Is(err, store.ErrLogCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--rebuild") {
			t.Fatalf("opening with a truncated log: %v", err)
		}
	})
	t.Run("Flipped", func(t *testing.T) {
		fs, path := setup(t)
		f, _ := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		f.WriteAt([]byte{0xff, 0xee}, 40) // inside the first record
		f.Close()
		st := open(t, fs)
		defer st.Close()
		if _, err := st.Changes(0, 100); !errors.Is(err, store.ErrLogCorrupt) || !strings.Contains(err.Error(), path+" offset 0") || !strings.Contains(err.Error(), "--rebuild") {
			t.Fatalf("reading a corrupt entry: %v", err)
		}
		// Entries after it read fine.
		if cs, err := st.Changes(10, 100); err != nil || len(cs) != 40 {
			t.Fatalf("changes after the corrupt entry: %d, %v", len(cs), err)
		}
	})
	t.Run("Stale", func(t *testing.T) {
		fs, _ := setup(t)
		g, _ := fs.Create("db/changelog/00000000000000000051.log", vfs.WriteCategoryUnspecified)
		g.Write([]byte("written, then the commit was lost"))
		g.Close()
		st := open(t, fs)
		defer st.Close()
		if files := logFiles(t, fs); len(files) != 1 || files[0] == "00000000000000000051.log" {
			t.Fatalf("files after open: %v", files)
		}
		b := st.NewBatch()
		defer b.Close()
		commitKeys(t, b, end, 50, 10, 10)
		if cs, err := st.Changes(45, 100); err != nil || len(cs) != 15 {
			t.Fatalf("after the stale file: %d changes, %v", len(cs), err)
		}
	})
}

// TestSyncModeKeepsEveryCommit: with WithSync(true) every commit is durable
// when Commit returns, change log included: a crash image that drops every
// unsynced write still holds all of them.
func TestSyncModeKeepsEveryCommit(t *testing.T) {
	fs := vfs.NewCrashableMem()
	st, err := store.Open("db", store.WithFS(fs), store.WithSync(true))
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	commitKeys(t, b, 45, 0, 30, 10)
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	b.Close()
	st.Close()
	got, err := store.Open("db", store.WithFS(crashed), store.WithSync(true))
	if err != nil {
		t.Fatalf("opening the crash image: %v", err)
	}
	defer got.Close()
	if p := got.Position("s"); p.Changes != 30 {
		t.Fatalf("crash image holds %d changes, want 30", p.Changes)
	}
	if cs, err := got.Changes(0, 100); err != nil || len(cs) != 30 {
		t.Fatalf("crash image's change log: %d changes, %v", len(cs), err)
	}
}

// TestChangesFromEveryCursor reads a page from every cursor position of a
// log whose transactions hold several changes and whose entries hold many
// transactions: each page starts right after its cursor.
func TestChangesFromEveryCursor(t *testing.T) {
	st := open(t, vfs.NewMem())
	defer st.Close()
	b := st.NewBatch()
	defer b.Close()
	off := int64(45)
	total := 0
	for i := 0; i < 60; i++ {
		keys := make([]string, 1+i%4)
		for j := range keys {
			keys[j] = fmt.Sprintf("k%d-%d", i, j)
		}
		off = apply(t, b, 1, off, 1, keys...)
		total += len(keys)
		if i%20 == 19 {
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for after := 0; after <= total; after++ {
		cs, err := st.Changes(uint64(after), 3)
		if err != nil {
			t.Fatalf("after %d: %v", after, err)
		}
		want := min(3, total-after)
		if len(cs) != want {
			t.Fatalf("after %d: %d changes, want %d", after, len(cs), want)
		}
		for i, c := range cs {
			if c.ID != uint64(after+1+i) {
				t.Fatalf("after %d: change %d has id %d", after, i, c.ID)
			}
		}
	}
}

// A change's applied time is when its batch was committed: never before the
// change's commit time, however long the batch was open before it arrived.
func TestAppliedAtNotBeforeCommit(t *testing.T) {
	st := open(t, vfs.NewMem())
	defer st.Close()
	b := st.NewBatch()
	defer b.Close()
	off := int64(40)
	var commits []int64
	for i := range 3 {
		time.Sleep(20 * time.Millisecond) // the batch has been open a while
		tx := tx(fmt.Sprintf("k%d", i))
		frame, err := format.AppendTx(nil, tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ApplyTx("s", 1, off, off+int64(len(frame)), uint64(i+1), tx, frame); err != nil {
			t.Fatal(err)
		}
		off += int64(len(frame))
		commits = append(commits, tx.CommitTime)
		if i == 1 {
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	cs, err := st.Changes(0, 10)
	if err != nil || len(cs) != 3 {
		t.Fatalf("changes: %v %v", len(cs), err)
	}
	for i, c := range cs {
		if c.AppliedAt < commits[i] {
			t.Errorf("change %d applied at %v, before its commit time %v", c.ID, time.Unix(0, c.AppliedAt), time.Unix(0, commits[i]))
		}
	}
}
