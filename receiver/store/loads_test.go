package store_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

// loadSim is a legacy database written by live transactions while a load
// reads it in chunks, and the stream both produce: commits reach the stream
// later than they happen (appended after COMMIT), in commit order; a chunk
// is read from a snapshot after the stream held its low watermark L and
// published later.
type loadSim struct {
	rnd      *rand.Rand
	keys     int
	numeric  bool // keys are integers ("1207"), else text ("k1207")
	versions bool
	db       map[string]simRow
	ver      uint64
	queue    []simMsg // committed, not yet in the stream
	stream   []simMsg
}

type simRow struct {
	val string
	ver uint64
}

type simMsg struct {
	live  *format.Change
	chunk *store.LoadChunk
}

func (s *loadSim) key(i int) string {
	if s.numeric {
		return fmt.Sprint(i)
	}
	return fmt.Sprintf("k%04d", i)
}

// write commits one live change to a random key of the first hot keys;
// history is written before shipping began: never in the stream.
func (s *loadSim) write(hot int, history bool) {
	k := s.key(s.rnd.IntN(hot))
	s.ver++
	c := format.Change{Table: "t", Key: []byte(k)}
	if s.versions {
		c.Version = s.ver
	}
	if _, ok := s.db[k]; ok && s.rnd.IntN(4) == 0 {
		c.Op = format.OpDelete
		delete(s.db, k)
	} else {
		c.Op = format.OpUpsert
		v := fmt.Sprintf(`{"k":%q,"v":%d}`, k, s.ver)
		c.After = []byte(v)
		s.db[k] = simRow{val: v, ver: s.ver}
	}
	if !history {
		s.queue = append(s.queue, simMsg{live: &c})
	}
}

// publish moves the oldest committed changes into the stream.
func (s *loadSim) publish(n int) {
	n = min(n, len(s.queue))
	s.stream = append(s.stream, s.queue[:n]...)
	s.queue = s.queue[n:]
}

// chunk reads keys [lo, hi) as chunk i of load id: L is the stream's
// length now; the chunk reaches the stream after more writes.
func (s *loadSim) chunk(id string, i uint64, lo, hi int) *store.LoadChunk {
	low := uint64(len(s.stream))
	tx := &format.Tx{CommitTime: time.Now().UnixNano()}
	for k := lo; k < hi; k++ {
		r, ok := s.db[s.key(k)]
		if !ok {
			continue
		}
		c := format.Change{Table: "t", Op: format.OpInsert, Key: []byte(s.key(k)), After: []byte(r.val)}
		if s.versions {
			c.Version = r.ver
		}
		tx.Changes = append(tx.Changes, c)
	}
	// The database's key order is not the bytes' order here: shuffled.
	s.rnd.Shuffle(len(tx.Changes), func(a, b int) { tx.Changes[a], tx.Changes[b] = tx.Changes[b], tx.Changes[a] })
	frame, err := format.AppendTx(nil, tx)
	if err != nil {
		panic(err)
	}
	return &store.LoadChunk{Load: id, Table: "t", Chunk: i, LowSeq: low, Tx: tx, Frame: frame, RawLen: len(frame)}
}

// applier applies the stream to a store, as the consumer does: one live
// source, frames at increasing offsets, messages numbered from 1.
type simApplier struct {
	t    *testing.T
	fs   vfs.FS
	opts []store.Option
	st   *store.Store
	b    *store.Batch
	off  int64
	next int // index of the next stream message to apply
}

func (a *simApplier) open() {
	st, err := store.Open("db", append([]store.Option{store.WithFS(a.fs)}, a.opts...)...)
	if err != nil {
		a.t.Fatal(err)
	}
	a.st, a.b = st, st.NewBatch()
	p := st.Position("s")
	a.off = p.Offset
	if a.off == 0 {
		a.off = 45
	}
	a.next = int(st.Cursor().Seq)
}

func (a *simApplier) close() {
	a.b.Close()
	if err := a.st.Close(); err != nil {
		a.t.Fatal(err)
	}
}

func (a *simApplier) apply(stream []simMsg, commitEvery int) {
	a.t.Helper()
	for ; a.next < len(stream); a.next++ {
		m, seq := stream[a.next], uint64(a.next+1)
		a.b.SetMessageSeq(seq)
		if m.live != nil {
			tx := &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{*m.live}}
			frame, err := format.AppendTx(nil, tx)
			if err != nil {
				a.t.Fatal(err)
			}
			end := a.off + int64(len(frame))
			if err := a.b.ApplyTx("s", 1, a.off, end, seq, tx, frame); err != nil {
				a.t.Fatalf("message %d: %v", seq, err)
			}
			a.off = end
		} else if _, err := a.b.ApplyLoad(m.chunk); err != nil {
			a.t.Fatalf("message %d (load chunk %d): %v", seq, m.chunk.Chunk, err)
		}
		a.b.SetCursor(store.StreamCursor{Seq: seq})
		if commitEvery > 0 && (a.next+1)%commitEvery == 0 {
			if err := a.b.CommitAsync(); err != nil {
				a.t.Fatal(err)
			}
		}
	}
	if err := a.b.Commit(); err != nil {
		a.t.Fatal(err)
	}
}

// check compares the store's rows with the database, row by row.
func checkRows(t *testing.T, st *store.Store, db map[string]simRow) {
	t.Helper()
	rows, _, err := st.Scan("t", nil, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[string(r.Key)] = string(r.Value)
	}
	bad := 0
	for k, r := range db {
		if got[k] != r.val {
			if bad++; bad <= 5 {
				t.Errorf("row %s = %q, database holds %q", k, got[k], r.val)
			}
		}
	}
	for k, v := range got {
		if _, ok := db[k]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("row %s = %q, deleted in the database (resurrected)", k, v)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d rows differ from the database", bad, len(db))
	}
}

func TestLoadMergesWithLiveChanges(t *testing.T) {
	for _, keys := range []string{"text", "integer"} {
		for _, versions := range []bool{false, true} {
			for _, bulk := range []bool{false, true} {
				for _, restart := range []string{"none", "reopen", "crash"} {
					name := fmt.Sprintf("keys=%s/versions=%v/bulk=%v/restart=%s", keys, versions, bulk, restart)
					t.Run(name, func(t *testing.T) {
						for seed := uint64(1); seed <= 8; seed++ {
							testLoadMerge(t, seed, keys == "integer", versions, bulk, restart)
						}
					})
				}
			}
		}
	}
}

func testLoadMerge(t *testing.T, seed uint64, numeric, versions, bulk bool, restart string) {
	rnd := rand.New(rand.NewPCG(seed, 7))
	sim := &loadSim{rnd: rnd, keys: 3000, numeric: numeric, versions: versions, db: map[string]simRow{}}
	// Existing data: written before shipping began (never in the stream),
	// then shipped (some still queued) on the hot keys; then the load in
	// chunks of 1000 keys while writers update and delete the hot rows.
	hot := 1500
	for range 6000 {
		sim.write(sim.keys, true)
	}
	for range 1500 {
		sim.write(hot, false)
	}
	sim.publish(1400)
	const per = 1000
	var pending []*store.LoadChunk
	for i := 0; i*per < sim.keys; i++ {
		pending = append(pending, sim.chunk("L1", uint64(i), i*per, (i+1)*per))
		for range rnd.IntN(200) {
			sim.write(hot, false)
		}
		sim.publish(rnd.IntN(400))
		// A chunk reaches the stream after a random number of changes
		// committed after its snapshot.
		for len(pending) > 0 && rnd.IntN(2) == 0 {
			sim.stream = append(sim.stream, simMsg{chunk: pending[0]})
			pending = pending[1:]
		}
	}
	for _, c := range pending {
		sim.publish(rnd.IntN(50))
		sim.stream = append(sim.stream, simMsg{chunk: c})
	}
	// Duplicates: a chunk published twice (a loader retry past the
	// stream's de-duplication window).
	sim.stream = append(sim.stream, simMsg{chunk: sim.stream[slices.IndexFunc(sim.stream, func(m simMsg) bool { return m.chunk != nil })].chunk})
	for range 300 {
		sim.write(hot, false)
	}
	sim.publish(len(sim.queue))

	fs := vfs.NewCrashableMem()
	a := &simApplier{t: t, fs: fs, opts: []store.Option{store.WithBulkLoad(bulk), store.WithFlushInterval(time.Hour), store.WithMemTableSize(1 << 20)}}
	a.open()
	if restart != "none" {
		// Stop and reopen the store several times mid-load; or crash it
		// (what was not synced is lost at random) and reopen the image.
		for cut := len(sim.stream) / 5; cut < len(sim.stream); cut += len(sim.stream) / 5 {
			a.apply(sim.stream[:cut], 7)
			if restart == "crash" {
				old := a.st
				a.b.Close()
				a.fs = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(rnd.Uint64(), 1))})
				a.open()
				old.Close()
				continue
			}
			a.close()
			a.open()
		}
	}
	a.apply(sim.stream, 7)
	defer a.close()
	checkRows(t, a.st, sim.db)
	// The change log holds every applied change once, with dense ids;
	// load rows say they came from the load.
	first, last := a.st.ChangeRange()
	cs, err := a.st.Changes(first-1, int(last-first+1))
	if err != nil || len(cs) != int(last-first+1) {
		t.Fatalf("change log: %d changes of [%d, %d]: %v", len(cs), first, last, err)
	}
	loaded := 0
	for _, c := range cs {
		if c.Load != "" {
			if c.Load != "L1" || c.Version.Source != "load:L1" {
				t.Fatalf("change %d: load %q source %q", c.ID, c.Load, c.Version.Source)
			}
			loaded++
		}
	}
	st, ok, _ := a.st.Load("L1")
	if !ok || st.Rows == 0 || st.State != store.LoadLoading {
		t.Fatalf("load state %+v, %v", st, ok)
	}
	if uint64(loaded) != st.Rows {
		t.Fatalf("change log holds %d load rows, the load applied %d", loaded, st.Rows)
	}
	if bulk != (st.Bulk > 0) {
		t.Fatalf("bulk %v: %d rows ingested in bulk", bulk, st.Bulk)
	}
	if st.Dropped == 0 {
		t.Fatalf("no load row dropped: the test did not exercise the rule (%+v)", st)
	}
}

// TestTombstonesKeptWhileLoading: a delete's tombstone outlives its
// retention while a load of its table runs, so a late chunk read before
// the delete does not bring the row back; with no load running it is
// purged as usual.
func TestTombstonesKeptWhileLoading(t *testing.T) {
	for _, loading := range []bool{true, false} {
		t.Run(fmt.Sprintf("loading=%v", loading), func(t *testing.T) {
			st, err := store.Open("db", store.WithFS(vfs.NewMem()), store.WithTombstoneRetention(time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			b := st.NewBatch()
			defer b.Close()
			if loading {
				b.SetMessageSeq(1)
				if err := b.BeginLoad("L", "t", 1, 1); err != nil {
					t.Fatal(err)
				}
			}
			b.SetMessageSeq(2)
			off := apply(t, b, 1, 45, 2, "k")
			b.SetMessageSeq(3)
			apply(t, b, 1, off, 3, "-k")
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1100 * time.Millisecond) // past the retention and the purge interval
			b.SetMessageSeq(4)
			apply(t, b, 2, 45, 4, "other")
			if err := b.Commit(); err != nil { // purges expired tombstones
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			// A chunk read after seq 2 (the row still there), applied late.
			tx := &format.Tx{ID: "L", Changes: []format.Change{{Table: "t", Op: format.OpInsert, Key: []byte("k"), After: []byte(`{"k":"k"}`)}}}
			frame, _ := format.AppendTx(nil, tx)
			b.SetMessageSeq(5)
			res, err := b.ApplyLoad(&store.LoadChunk{Load: "L", Table: "t", LowSeq: 2, Tx: tx, Frame: frame, RawLen: len(frame)})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			_, present, _ := st.Get("t", []byte("k"))
			if loading && (present || res.Dropped != 1) {
				t.Fatalf("a load runs: the deleted row came back (%+v)", res)
			}
			if !loading && !present {
				t.Fatalf("no load ran and the tombstone was purged: the late chunk applies (%+v)", res)
			}
		})
	}
}
