package receiver_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// legacy is a database table written by contended live transactions (hot
// keys, updates and deletes), whose commits reach the stream later than
// they happen but in commit order, while a load reads it in chunks.
type legacy struct {
	rnd      *rand.Rand
	versions bool
	ver      uint64
	db       map[string]string
	dbVer    map[string]uint64
	txs      []format.Tx // live commits, in order
}

func (l *legacy) key(i int) string { return fmt.Sprintf("k%05d", i) }

func (l *legacy) commit(hot int, live bool) {
	k := l.key(l.rnd.IntN(hot))
	l.ver++
	c := format.Change{Table: "t", Key: []byte(k)}
	if l.versions {
		c.Version = l.ver
	}
	if _, ok := l.db[k]; ok && l.rnd.IntN(4) == 0 {
		c.Op = format.OpDelete
		delete(l.db, k)
		delete(l.dbVer, k)
	} else {
		c.Op = format.OpUpsert
		c.After = fmt.Appendf(nil, `{"k":%q,"v":%d,"pad":%q}`, k, l.ver, strings.Repeat("p", 120))
		l.db[k], l.dbVer[k] = string(c.After), l.ver
	}
	if live {
		l.txs = append(l.txs, format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{c}})
	}
}

// loadPub publishes load messages with the format/load encoder.
type loadPub struct {
	t   *testing.T
	e   *env
	enc *load.Encoder
}

func newLoadPub(t *testing.T, e *env) *loadPub {
	c, err := wire.NewCompressor(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	return &loadPub{t: t, e: e, enc: load.NewEncoder(c)}
}

func (p *loadPub) publish(h *load.Header, body []byte, noMsgID bool) uint64 {
	p.t.Helper()
	hdr := h.Encode()
	if noMsgID {
		delete(hdr, wire.HdrMsgID)
	}
	if h.Kind == load.KindChunk && body == nil {
		p.t.Fatal("chunk without a body")
	}
	ack, err := p.e.js.PublishMsg(context.Background(), &nats.Msg{Subject: load.Subject("ferry", h.Table), Header: nats.Header(hdr), Data: body})
	if err != nil {
		p.t.Fatal(err)
	}
	return ack.Sequence
}

func (p *loadPub) begin(id, table string, estimate int64) {
	p.t.Helper()
	b := &load.Begin{Table: table, Input: "postgresql", KeyColumns: []string{"id"}, Estimate: estimate, ChunkRows: 500, Started: time.Now()}
	body, err := load.EncodeBegin(b)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(&load.Header{Load: id, Kind: load.KindBegin, Table: table, Estimate: estimate, Time: time.Now().UnixNano()}, body, false)
}

func (p *loadPub) done(id, table string, rows int64, chunks uint64) {
	p.t.Helper()
	p.publish(&load.Header{Load: id, Kind: load.KindDone, Table: table, Rows: rows, Chunks: chunks, Time: time.Now().UnixNano()}, nil, false)
}

// chunkMsgs encodes rows as the parts of chunk i (at most per rows each).
func (p *loadPub) chunkMsgs(id, table string, i uint64, low uint64, rows []format.Change, per int) (hs []load.Header, bodies [][]byte) {
	p.t.Helper()
	for part := 0; part*per < len(rows); part++ {
		rs := rows[part*per : min((part+1)*per, len(rows))]
		h := load.Header{Load: id, Kind: load.KindChunk, Table: table, Chunk: i, Part: part, LowSeq: low, Codec: wire.CodecZstd, Time: time.Now().UnixNano()}
		if (part+1)*per >= len(rows) {
			h.Last, h.Hi = true, load.KeyOf(string(rs[len(rs)-1].Key))
		}
		body, err := p.enc.Chunk(nil, &h, &format.Tx{ID: id, CommitTime: h.Time, Changes: rs})
		if err != nil {
			p.t.Fatal(err)
		}
		hs, bodies = append(hs, h), append(bodies, body)
	}
	return hs, bodies
}

// liveMsgs writes the legacy's transactions as change files and cuts them
// one frame per message, so that the test decides where each lands in the
// stream.
func liveMsgs(t *testing.T, txs []format.Tx) []wiretest.Msg {
	dir := t.TempDir()
	wiretest.WriteSegments(t, dir, "shop", txs, 500)
	frames, err := wiretest.Frames(dir, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var out []wiretest.Msg
	for i := range frames {
		out = append(out, wiretest.Cut("shop", frames[i:i+1], 1<<20)...)
	}
	return out
}

// tableRows returns the table's rows in the store, by key.
func tableRows(t *testing.T, st *store.Store, table string) map[string]store.Row {
	t.Helper()
	rows, _, err := st.Scan(table, nil, nil, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Row{}
	for _, r := range rows {
		out[string(r.Key)] = r
	}
	return out
}

func checkTable(t *testing.T, st *store.Store, db map[string]string) {
	t.Helper()
	got := tableRows(t, st, "t")
	bad := 0
	for k, v := range db {
		if r, ok := got[k]; !ok || string(r.Value) != v {
			if bad++; bad <= 5 {
				t.Errorf("row %s: receiver holds %q (present %v), the database %q", k, r.Value, ok, v)
			}
		}
	}
	for k, r := range got {
		if _, ok := db[k]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("row %s: receiver holds %q, deleted in the database (resurrected)", k, r.Value)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d rows differ from the database (%d rows there, %d here)", bad, len(db), len(got))
	}
}

// TestLoadWithLiveChanges loads a table over a real JetStream stream while
// contended live changes (updates and deletes of the same hot rows) are
// interleaved with the load's messages in random orders: committed before
// a chunk's snapshot but confirmed after its low watermark, after it,
// between its parts. The receiver restarts mid-load and chunk messages are
// published twice. Its rows must equal the database row by row, the gate
// (--wait-load) open only once the load is done.
func TestLoadWithLiveChanges(t *testing.T) {
	for _, versions := range []bool{false, true} {
		t.Run(fmt.Sprintf("versions=%v", versions), func(t *testing.T) {
			for seed := uint64(1); seed <= 3; seed++ {
				testLoadWithLive(t, seed, versions)
			}
		})
	}
}

func testLoadWithLive(t *testing.T, seed uint64, versions bool) {
	rnd := rand.New(rand.NewPCG(seed, 11))
	l := &legacy{rnd: rnd, versions: versions, db: map[string]string{}, dbVer: map[string]uint64{}}
	const keys, hot, perChunk = 4000, 1200, 500
	// The legacy's existing rows, from before shipping began.
	for range 3 * keys {
		l.commit(keys, false)
	}
	// Live commits, decided up front; snapshots are taken between them.
	type snap struct {
		at   int // live commits made before the snapshot
		rows map[string]string
		vers map[string]uint64
	}
	var snaps []snap
	chunks := keys / perChunk
	for i := 0; i < chunks; i++ {
		for range 100 + rnd.IntN(300) {
			l.commit(hot, true)
		}
		s := snap{at: len(l.txs), rows: map[string]string{}, vers: map[string]uint64{}}
		for k, v := range l.db {
			s.rows[k], s.vers[k] = v, l.dbVer[k]
		}
		snaps = append(snaps, s)
	}
	for range 500 {
		l.commit(hot, true)
	}
	msgs := liveMsgs(t, l.txs)
	// msgs[i] holds l.txs[i] (one frame each); the last one is the seal.

	e := newEnv(t)
	lp := newLoadPub(t, e)
	data := t.TempDir()
	run := e.start(data, receiver.WithWaitLoad("t"), receiver.WithReadyLag(time.Hour))
	lp.begin("L1", "t", int64(len(snaps[0].rows)))
	published := 0
	pubLive := func(n int) {
		for ; n > 0 && published < len(msgs); n-- {
			e.publish(msgs[published])
			published++
		}
	}
	var sent int64
	var pending [][2]any // chunk messages not yet published
	restarted := false
	for i, s := range snaps {
		// The commits before the snapshot reach the stream partly before
		// its low watermark, partly after (appended after COMMIT).
		pubLive(s.at - published - rnd.IntN(40))
		info, err := e.js.Stream(context.Background(), "FERRY")
		if err != nil {
			t.Fatal(err)
		}
		low := info.CachedInfo().State.LastSeq
		var rows []format.Change
		for k := i * perChunk; k < (i+1)*perChunk; k++ {
			key := l.key(k)
			v, ok := s.rows[key]
			if !ok {
				continue
			}
			c := format.Change{Table: "t", Op: format.OpInsert, Key: []byte(key), After: []byte(v)}
			if versions {
				c.Version = s.vers[key]
			}
			rows = append(rows, c)
		}
		sent += int64(len(rows))
		hs, bodies := lp.chunkMsgs("L1", "t", uint64(i), low, rows, 300)
		for j := range hs {
			pending = append(pending, [2]any{hs[j], bodies[j]})
		}
		// Chunk messages go out interleaved with later commits.
		for len(pending) > 0 && rnd.IntN(3) > 0 {
			pubLive(rnd.IntN(30))
			h, b := pending[0][0].(load.Header), pending[0][1].([]byte)
			lp.publish(&h, b, false)
			if rnd.IntN(5) == 0 {
				lp.publish(&h, b, true) // a retry past the de-duplication window
			}
			pending = pending[1:]
		}
		if !restarted && i == chunks/2 {
			run.stop()
			run = e.start(data, receiver.WithWaitLoad("t"), receiver.WithReadyLag(time.Hour))
			restarted = true
		}
	}
	for _, p := range pending {
		h, b := p[0].(load.Header), p[1].([]byte)
		pubLive(rnd.IntN(30))
		lp.publish(&h, b, false)
	}
	// The gate is red until the load is done, however caught up.
	pubLive(len(msgs))
	run.waitApplied(t, "shop", msgs[len(msgs)-1])
	waitFor(t, "the load's last chunk applied", 30*time.Second, func() bool {
		st, _, _ := run.r.Store().Load("L1")
		return st.Chunk == uint64(chunks-1) && run.r.Status().CaughtUp
	})
	if resp, err := http.Get(run.http.URL + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before the load's done: %v %v, want 503", resp.StatusCode, err)
	}
	lp.done("L1", "t", sent, uint64(chunks))
	waitFor(t, "/readyz 200 once the load is done", 30*time.Second, func() bool {
		resp, err := http.Get(run.http.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	checkTable(t, run.r.Store(), l.db)

	// Status: the load, done, with its counts.
	var st api.Status
	getJSON(t, run.http.URL+"/v1/status", http.StatusOK, &st)
	if len(st.Loads) != 1 || st.Loads[0].State != "done" || st.Loads[0].Load != "L1" || st.Loads[0].RowsSent != uint64(sent) ||
		st.Loads[0].Rows == 0 || st.Loads[0].Rows > uint64(sent) || st.Loads[0].RowsApplied+st.Loads[0].RowsDropped != st.Loads[0].Rows {
		t.Fatalf("status loads: %+v (sent %d)", st.Loads, sent)
	}
	if st.Loads[0].RowsIngested == 0 || st.Loads[0].RowsDropped == 0 {
		t.Fatalf("no rows ingested in bulk or none dropped: the test missed a path (%+v)", st.Loads[0])
	}
	// The change log says which rows came from the load.
	var page struct {
		Changes []api.ChangeJSON `json:"changes"`
	}
	getJSON(t, run.http.URL+"/v1/changes?after=0&limit=10000", http.StatusOK, &page)
	fromLoad := 0
	for _, c := range page.Changes {
		if c.Load != "" {
			if c.Load != "L1" || c.Version.Source != "load:L1" || c.Op != "insert" {
				t.Fatalf("load change %+v", c)
			}
			fromLoad++
		}
	}
	if fromLoad == 0 {
		t.Fatalf("no change in the log says it came from the load")
	}
	run.stop()
}

// TestLoadHostileMessages: load messages that are corrupt (CRC), oversized,
// of an unknown kind, or whose rows break the load's rules fail their own
// load with an error naming it; other loads and the sources keep going.
func TestLoadHostileMessages(t *testing.T) {
	e := newEnv(t)
	lp := newLoadPub(t, e)
	run := e.start(t.TempDir(), receiver.WithWaitLoad("good"), receiver.WithMaxTxBytes(1<<20))
	rows := func(table string, n int) []format.Change {
		var cs []format.Change
		for i := range n {
			cs = append(cs, format.Change{Table: table, Op: format.OpInsert, Key: fmt.Appendf(nil, "r%03d", i), After: fmt.Appendf(nil, `{"i":%d}`, i)})
		}
		return cs
	}
	hs, bodies := lp.chunkMsgs("good", "good", 0, 0, rows("good", 20), 100)
	lp.begin("good", "good", 20)
	lp.publish(&hs[0], bodies[0], false)

	// A bad CRC: the frame inside an uncompressed body, one byte flipped.
	h := load.Header{Load: "crc", Kind: load.KindChunk, Table: "crc", Codec: wire.CodecNone, Last: true, Hi: load.KeyOf("r009"), Time: 1}
	body, err := lp.enc.Chunk(nil, &h, &format.Tx{ID: "crc", Changes: rows("crc", 10)})
	if err != nil {
		t.Fatal(err)
	}
	body[len(body)-3] ^= 0x40
	lp.begin("crc", "crc", 10)
	lp.publish(&h, body, false)
	// Oversized: a raw length over the limit.
	h2 := load.Header{Load: "big", Kind: load.KindChunk, Table: "big", Codec: wire.CodecZstd, Last: true, Hi: load.KeyOf("r009"), Time: 1}
	body2, err := lp.enc.Chunk(nil, &h2, &format.Tx{ID: "big", Changes: rows("big", 10)})
	if err != nil {
		t.Fatal(err)
	}
	hdr := h2.Encode()
	hdr[load.HdrRawLen] = []string{fmt.Sprint(load.MaxRawLen + 1)}
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: load.Subject("ferry", "big"), Header: nats.Header(hdr), Data: body2}); err != nil {
		t.Fatal(err)
	}
	// A chunk whose raw size could decode past --max-tx-mb (set to 1 MiB).
	h5 := load.Header{Load: "huge", Kind: load.KindChunk, Table: "huge", Codec: wire.CodecNone, Last: true, Hi: load.KeyOf("r"), Time: 1}
	tx5 := &format.Tx{ID: "huge", Changes: []format.Change{{Table: "huge", Op: format.OpInsert, Key: []byte("r"), After: make([]byte, 400<<10)}}}
	raw5, err := format.AppendTx(nil, tx5)
	if err != nil {
		t.Fatal(err)
	}
	h5.Rows, h5.RawLen = 1, len(raw5)
	lp.publish(&h5, raw5, false)
	// An unknown kind.
	hdr3 := (&load.Header{Load: "odd", Kind: load.KindDone, Table: "odd", Time: 1}).Encode()
	hdr3[load.HdrKind] = []string{"explode"}
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: load.Subject("ferry", "odd"), Header: nats.Header(hdr3)}); err != nil {
		t.Fatal(err)
	}
	// Rows of another table than the load's (valid CRC, the loader's bug).
	h4 := load.Header{Load: "mix", Kind: load.KindChunk, Table: "mix", Codec: wire.CodecNone, Last: true, Hi: load.KeyOf("r009"), Time: 1}
	tx4 := &format.Tx{ID: "mix", Changes: rows("other", 10)}
	raw4, err := format.AppendTx(nil, tx4)
	if err != nil {
		t.Fatal(err)
	}
	h4.Rows, h4.RawLen = 10, len(raw4)
	lp.publish(&h4, raw4, false)
	// Garbage naming no load at all.
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: "ferry.load.x", Header: nats.Header{"Ferry-Load-Kind": {"chunk"}}, Data: []byte("junk")}); err != nil {
		t.Fatal(err)
	}
	// A live source keeps flowing, and the good load finishes.
	live := writeMsgs(t, "shop", genTxs(5, 2, "t", "a"), 0, 1<<20)
	e.publish(live...)
	lp.done("good", "good", 20, 1)
	run.waitApplied(t, "shop", live[len(live)-1])
	waitFor(t, "the good load done and the gate green", 30*time.Second, func() bool {
		return run.r.Status().Ready
	})
	want := map[string]string{
		"crc":  "checksum",
		"big":  "Ferry-Raw-Len",
		"odd":  "explode",
		"mix":  "table",
		"huge": "--max-tx-mb",
	}
	st := run.r.Status()
	got := map[string]api.LoadStatus{}
	for _, l := range st.Loads {
		got[l.Table] = l
	}
	for table, word := range want {
		l := got[table]
		if l.State != "failed" || !strings.Contains(l.Error, word) || !strings.Contains(l.Error, table) && !strings.Contains(l.Error, l.Load) {
			t.Errorf("load of %s: state %q error %q, want failed naming %q", table, l.State, l.Error, word)
		}
		t.Logf("%s: %s", table, l.Error)
	}
	if g := got["good"]; g.State != "done" || g.RowsApplied != 20 {
		t.Fatalf("good load: %+v", g)
	}
	if rows := tableRows(t, run.r.Store(), "crc"); len(rows) != 0 {
		t.Fatalf("a corrupt chunk applied %d rows", len(rows))
	}
	if rows := tableRows(t, run.r.Store(), "good"); len(rows) != 20 {
		t.Fatalf("good: %d rows", len(rows))
	}
}

// TestReloadRepairsDamagedRow: a row damaged at the receiver (here by a
// rogue source) is repaired by a new load of the table, while a row a
// live change wrote after the load's low watermark keeps the live state.
func TestReloadRepairsDamagedRow(t *testing.T) {
	e := newEnv(t)
	lp := newLoadPub(t, e)
	run := e.start(t.TempDir())
	good := func(k string) format.Change {
		return format.Change{Table: "t", Op: format.OpUpsert, Key: []byte(k), After: fmt.Appendf(nil, `{"k":%q,"v":"good"}`, k)}
	}
	var txs []format.Tx
	for _, k := range []string{"a", "b", "c"} {
		txs = append(txs, format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{good(k)}})
	}
	e.publish(writeMsgs(t, "shop", txs, 0, 1<<20)...)
	rogue := format.Change{Table: "t", Op: format.OpUpsert, Key: []byte("b"), After: []byte(`{"k":"b","v":"DAMAGED"}`)}
	rm := writeMsgs(t, "rogue", []format.Tx{{CommitTime: time.Now().UnixNano(), Changes: []format.Change{rogue}}}, 0, 1<<20)
	e.publish(rm...)
	run.waitApplied(t, "rogue", rm[len(rm)-1])
	if r, _, _ := run.r.Store().Get("t", []byte("b")); !strings.Contains(string(r.Value), "DAMAGED") {
		t.Fatalf("b = %s", r.Value)
	}
	info, err := e.js.Stream(context.Background(), "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	low := info.CachedInfo().State.LastSeq
	// After the snapshot, a live change of c (confirmed after low).
	c2 := format.Change{Table: "t", Op: format.OpUpsert, Key: []byte("c"), After: []byte(`{"k":"c","v":"newer"}`)}
	lm := writeMsgs(t, "shop2", []format.Tx{{CommitTime: time.Now().UnixNano(), Changes: []format.Change{c2}}}, 0, 1<<20)
	e.publish(lm...)
	lp.begin("R1", "t", 3)
	hs, bodies := lp.chunkMsgs("R1", "t", 0, low, []format.Change{good("a"), good("b"), good("c")}, 100)
	for i := range hs {
		lp.publish(&hs[i], bodies[i], false)
	}
	lp.done("R1", "t", 3, 1)
	waitFor(t, "the re-load done", 30*time.Second, func() bool {
		st, _, _ := run.r.Store().Load("R1")
		return st.State == store.LoadDone
	})
	rows := tableRows(t, run.r.Store(), "t")
	for k, want := range map[string]string{"a": "good", "b": "good", "c": "newer"} {
		if !strings.Contains(string(rows[k].Value), `"v":"`+want+`"`) {
			t.Errorf("row %s = %s, want v %s", k, rows[k].Value, want)
		}
	}
	if l, _, _ := run.r.Store().Load("R1"); l.Rows != 2 || l.Dropped != 1 {
		t.Fatalf("re-load: %+v, want 2 rows applied and 1 dropped", l)
	}
}

// TestLoadWithSourcesFilter: a receiver restricted to some sources
// (--source) still takes the initial loads.
func TestLoadWithSourcesFilter(t *testing.T) {
	e := newEnv(t)
	lp := newLoadPub(t, e)
	run := e.start(t.TempDir(), receiver.WithSources("shop"), receiver.WithWaitLoad("t"))
	live := writeMsgs(t, "shop", genTxs(3, 2, "t", "a"), 0, 1<<20)
	e.publish(live...)
	lp.begin("F1", "t", 2)
	hs, bodies := lp.chunkMsgs("F1", "t", 0, 0, []format.Change{
		{Table: "t", Op: format.OpInsert, Key: []byte("x1"), After: []byte(`{"x":1}`)},
		{Table: "t", Op: format.OpInsert, Key: []byte("x2"), After: []byte(`{"x":2}`)}}, 100)
	lp.publish(&hs[0], bodies[0], false)
	lp.done("F1", "t", 2, 1)
	run.waitApplied(t, "shop", live[len(live)-1])
	waitFor(t, "the load applied and the gate green", 30*time.Second, func() bool { return run.r.Status().Ready })
	if rows := tableRows(t, run.r.Store(), "t"); len(rows) != 8 || string(rows["x2"].Value) != `{"x":2}` {
		t.Fatalf("%d rows, x2 = %s", len(rows), rows["x2"].Value)
	}
}
