package load_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/format"
	fload "github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startPG starts a throwaway PostgreSQL cluster (bench/pg), skipping only
// when PostgreSQL is not installed outside CI.
func startPG(t *testing.T) (*pg.Cluster, *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "32MB"})
	if errors.Is(err, pg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (run `make deps`): %v", err)
	}
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return c, conn
}

func exec(t *testing.T, conn *pgx.Conn, sqls ...string) {
	t.Helper()
	for _, q := range sqls {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

type rig struct {
	nc *nats.Conn
	js jetstream.JetStream
	st *load.JetStream
}

func newRig(t *testing.T) *rig {
	t.Helper()
	s := wiretest.StartServer(t)
	nc, js := s.Connect(t)
	st, err := load.OpenJetStream(context.Background(), nc, jsclient.Config{}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{nc: nc, js: js, st: st}
}

// msg is a decoded load message of the stream.
type msg struct {
	seq  uint64
	h    fload.Header
	rows []format.Change
	body []byte
}

// messages reads every load message of the stream, in order.
func (r *rig) messages(t *testing.T) []msg {
	t.Helper()
	ctx := context.Background()
	st, err := r.js.Stream(ctx, "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := fload.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var out []msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted (a lost message)
		}
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		if !fload.IsSubject("ferry", m.Subject) {
			continue
		}
		h, err := fload.ParseHeader(m.Header)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if err := fload.CheckSubject("ferry", m.Subject, &h); err != nil {
			t.Fatal(err)
		}
		mm := msg{seq: seq, h: h, body: m.Data}
		if h.Kind == fload.KindChunk {
			var tx format.Tx
			if err := dec.Chunk(&h, m.Data, &tx); err != nil {
				t.Fatalf("seq %d: %v", seq, err)
			}
			for _, c := range tx.Changes {
				c.Key, c.After = bytes.Clone(c.Key), bytes.Clone(c.After)
				mm.rows = append(mm.rows, c)
			}
		}
		out = append(out, mm)
	}
	return out
}

// loaded returns the rows of table's chunk messages by key (later copies
// win), and checks the chunk and part sequence of every load.
func loaded(t *testing.T, ms []msg, table string) map[string]format.Change {
	t.Helper()
	out := map[string]format.Change{}
	for _, m := range ms {
		if m.h.Table != table || m.h.Kind != fload.KindChunk {
			continue
		}
		for _, c := range m.rows {
			out[string(c.Key)] = c
		}
	}
	return out
}

// dbRows reads table's rows as the loader must render them: key columns'
// text joined by '/', the image as row_to_json would (compared as JSON).
func dbRows(t *testing.T, conn *pgx.Conn, table string, keyCols ...string) map[string]string {
	t.Helper()
	cols := make([]string, len(keyCols))
	for i, k := range keyCols {
		cols[i] = k + "::text"
	}
	q := fmt.Sprintf("SELECT concat_ws('/', %s), row_to_json(t)::text FROM %s t", strings.Join(cols, ", "), table)
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameJSON(t *testing.T, got, want string) bool {
	t.Helper()
	dec := func(s string) any {
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("image %q: %v", s, err)
		}
		return v
	}
	return reflect.DeepEqual(dec(got), dec(want))
}

// compare checks the loaded rows against the database's, row by row.
func compare(t *testing.T, got map[string]format.Change, want map[string]string, versionCol string) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("key %s: not loaded", k)
			continue
		}
		if !sameJSON(t, string(g.After), w) {
			t.Errorf("key %s: image %s, database %s", k, g.After, w)
		}
		if versionCol != "" {
			var m map[string]any
			json.Unmarshal([]byte(w), &m)
			if want := uint64(m[versionCol].(float64)); g.Version != want {
				t.Errorf("key %s: version %d, database %d", k, g.Version, want)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("key %s: loaded, not in the database", k)
		}
	}
}

func checkSequence(t *testing.T, ms []msg, table string) {
	t.Helper()
	var lastChunk int64 = -1
	var prevHi fload.Key
	part := 0
	for _, m := range ms {
		if m.h.Table != table || m.h.Kind != fload.KindChunk {
			continue
		}
		if int64(m.h.Chunk) != lastChunk {
			if int64(m.h.Chunk) < lastChunk {
				t.Fatalf("chunk %d after chunk %d", m.h.Chunk, lastChunk)
			}
			if !reflect.DeepEqual(m.h.Lo, prevHi) {
				t.Errorf("chunk %d starts after %q, the previous chunk ended at %q", m.h.Chunk, m.h.Lo.Strings(), prevHi.Strings())
			}
			lastChunk, part = int64(m.h.Chunk), 0
		}
		if m.h.Part != part {
			t.Errorf("chunk %d: part %d, want %d", m.h.Chunk, m.h.Part, part)
		}
		part++
		if m.h.Last {
			prevHi = m.h.Hi
		}
	}
}

const ordersDDL = `CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, total numeric(10,2), rev bigint NOT NULL,
	paid boolean, doc jsonb, note text, ratio double precision)`

func fillOrders(t *testing.T, conn *pgx.Conn, n int) {
	exec(t, conn, ordersDDL, fmt.Sprintf(`INSERT INTO orders SELECT i, 'st"'||(i%%7)||E'\n', i*1.25, i%%9+1, i%%2=0,
		jsonb_build_object('a', i, 'b', 'x'), CASE WHEN i%%5=0 THEN NULL ELSE 'note '||i END,
		CASE WHEN i%%11=0 THEN 'NaN'::float8 ELSE i/3.0 END FROM generate_series(1, %d) i`, n), "ANALYZE orders")
}

func TestLoadPostgres(t *testing.T) {
	c, conn := startPG(t)
	r := newRig(t)
	fillOrders(t, conn, 2500)
	// A live message before the load: the low watermark counts it.
	if _, err := r.js.Publish(context.Background(), "ferry.shop", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var progress []load.Progress
	cfg := load.Config{ChunkRows: 1000, MessageBytes: 32 << 10, Progress: func(p load.Progress) { progress = append(progress, p) }}
	res, err := load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "orders", VersionColumn: "rev"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 2500 || res.Total != 2500 || res.Resumed || res.AlreadyDone {
		t.Fatalf("result %+v", res)
	}
	ms := r.messages(t)
	if ms[0].h.Kind != fload.KindBegin || ms[len(ms)-1].h.Kind != fload.KindDone {
		t.Fatalf("first %s, last %s", ms[0].h.Kind, ms[len(ms)-1].h.Kind)
	}
	b, err := fload.DecodeBegin(&ms[0].h, ms[0].body)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.KeyColumns, []string{"id"}; !reflect.DeepEqual(got, want) || !reflect.DeepEqual(b.Upper, []string{"2500"}) || b.Estimate != 2500 {
		t.Fatalf("begin %+v", b)
	}
	checkSequence(t, ms, "orders")
	parts := 0
	for _, m := range ms {
		if m.h.Kind == fload.KindChunk {
			parts++
			if m.h.LowSeq < 1 || m.h.LowSeq >= m.seq {
				t.Errorf("chunk %d part %d at seq %d: low watermark %d", m.h.Chunk, m.h.Part, m.seq, m.h.LowSeq)
			}
			if m.h.RawLen > 32<<10 {
				t.Errorf("a message of %d raw bytes, limit %d", m.h.RawLen, 32<<10)
			}
		}
	}
	if parts < 6 {
		t.Errorf("%d chunk messages: the chunks were not split into parts", parts)
	}
	compare(t, loaded(t, ms, "orders"), dbRows(t, conn, "orders", "id"), "rev")
	if len(progress) < 3 || !progress[len(progress)-1].Done || progress[len(progress)-1].Rows != 2500 {
		t.Errorf("progress %+v", progress)
	}
	// The image keeps the table's column order, like the legacy's.
	if img := string(loaded(t, ms, "orders")["5"].After); !strings.HasPrefix(img, `{"id":5,"status":`) || !strings.Contains(img, `"note":null`) {
		t.Errorf("image %s", img)
	}

	// A rerun with the same arguments has nothing to do.
	res, err = load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "orders", VersionColumn: "rev"}, cfg)
	if err != nil || !res.AlreadyDone {
		t.Fatalf("rerun: %+v, %v", res, err)
	}
	// --reload sends it again, as a new load.
	cfg.Reload = true
	res2, err := load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "orders", VersionColumn: "rev"}, cfg)
	if err != nil || res2.Rows != 2500 || res2.Load == res.Load {
		t.Fatalf("reload: %+v, %v", res2, err)
	}
}

func TestLoadCompositeKeyAndRange(t *testing.T) {
	c, conn := startPG(t)
	r := newRig(t)
	exec(t, conn, `CREATE TABLE order_lines (order_id bigint, line_no int, sku text, qty int, PRIMARY KEY (order_id, line_no))`,
		`INSERT INTO order_lines SELECT o, l, 'sku-'||o||'-'||l, l FROM generate_series(1, 300) o, generate_series(1, 7) l`)
	res, err := load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "order_lines"}, load.Config{ChunkRows: 333})
	if err != nil || res.Rows != 2100 {
		t.Fatalf("%+v, %v", res, err)
	}
	ms := r.messages(t)
	checkSequence(t, ms, "order_lines")
	compare(t, loaded(t, ms, "order_lines"), dbRows(t, conn, "order_lines", "order_id", "line_no"), "")
	if _, ok := loaded(t, ms, "order_lines")["300/7"]; !ok {
		t.Error("key 300/7 (order_id/line_no) missing")
	}

	// A key range [from, to], as a re-load of part of the table.
	r2 := newRig(t)
	res, err = load.Run(context.Background(), r2.st, load.Input{PG: c.URL("postgres")},
		load.Table{Name: "order_lines", From: []string{"10", "3"}, To: []string{"12", "2"}}, load.Config{ChunkRows: 4})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range r2.messages(t) {
		for _, c := range m.rows {
			keys = append(keys, string(c.Key))
		}
	}
	want := []string{"10/3", "10/4", "10/5", "10/6", "10/7", "11/1", "11/2", "11/3", "11/4", "11/5", "11/6", "11/7", "12/1", "12/2"}
	if !reflect.DeepEqual(keys, want) || res.Rows != int64(len(want)) {
		t.Fatalf("range load sent %v, want %v", keys, want)
	}
}

func TestLoadRefusesTableWithoutKey(t *testing.T) {
	c, conn := startPG(t)
	r := newRig(t)
	exec(t, conn, `CREATE TABLE audit (at bigint, what text)`, `INSERT INTO audit SELECT i, 'x' FROM generate_series(1, 10) i`)
	_, err := load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "audit"}, load.Config{})
	if !errors.Is(err, load.ErrNoKey) || !strings.Contains(err.Error(), "audit") || !strings.Contains(err.Error(), "--key") {
		t.Fatalf("err = %v, want ErrNoKey naming the table and --key", err)
	}
	if ms := r.messages(t); len(ms) != 0 {
		t.Fatalf("%d messages sent for a refused table", len(ms))
	}
	// With --key it loads.
	res, err := load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "audit", Key: []string{"at"}}, load.Config{})
	if err != nil || res.Rows != 10 {
		t.Fatalf("%+v, %v", res, err)
	}
	// An empty table: begin and done, no chunk.
	exec(t, conn, `CREATE TABLE empty (id int PRIMARY KEY)`)
	res, err = load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "empty"}, load.Config{})
	if err != nil || res.Rows != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
}

// TestLoadFixedUpperBound: rows inserted past the largest key while the load
// runs are not loaded (they travel as live changes); the load ends.
func TestLoadFixedUpperBound(t *testing.T) {
	c, conn := startPG(t)
	r := newRig(t)
	exec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i`)
	next := 101
	cfg := load.Config{ChunkRows: 10, Progress: func(load.Progress) {
		// The table keeps growing by more than a chunk per chunk.
		exec(t, conn, fmt.Sprintf(`INSERT INTO t SELECT i, 'new' FROM generate_series(%d, %d) i`, next, next+19))
		next += 20
	}}
	res, err := load.Run(context.Background(), r.st, load.Input{PG: c.URL("postgres")}, load.Table{Name: "t"}, cfg)
	if err != nil || res.Rows != 100 {
		t.Fatalf("%+v, %v: want exactly the 100 rows present at start", res, err)
	}
}

// faultStream fails publishing after a number of messages, as a loader
// killed there would leave the stream (publishes already made stay stored).
type faultStream struct {
	load.Stream
	left   atomic.Int64
	cancel context.CancelFunc
}

func (f *faultStream) PublishAsync(m *nats.Msg) (jetstream.PubAckFuture, error) {
	if f.left.Add(-1) < 0 {
		f.cancel()
		return nil, errors.New("killed")
	}
	return f.Stream.PublishAsync(m)
}

func TestLoadResume(t *testing.T) {
	c, conn := startPG(t)
	fillOrders(t, conn, 3000)
	in, tb := load.Input{PG: c.URL("postgres")}, load.Table{Name: "orders", VersionColumn: "rev"}
	// Stop after n publishes, on a last part and inside a chunk (parts of
	// 8 KiB, about 40 rows: 13 parts a chunk of 500 rows). A run must get
	// one chunk through to make progress.
	for _, stopAfter := range []int64{14, 20, 27, 40} {
		t.Run(fmt.Sprint("after", stopAfter), func(t *testing.T) {
			r := newRig(t)
			cfg := load.Config{ChunkRows: 500, MessageBytes: 8 << 10}
			runs := 0
			for ; runs < 100; runs++ {
				ctx, cancel := context.WithCancel(context.Background())
				fs := &faultStream{Stream: r.st, cancel: cancel}
				fs.left.Store(stopAfter)
				res, err := load.Run(ctx, fs, in, tb, cfg)
				cancel()
				if err == nil {
					if runs > 0 && !res.Resumed {
						t.Fatalf("run %d did not resume", runs)
					}
					break
				}
			}
			ms := r.messages(t)
			ids := map[string]bool{}
			for _, m := range ms {
				ids[m.h.Load] = true
			}
			if len(ids) != 1 {
				t.Fatalf("%d load ids, want 1 resumed load: %v", len(ids), ids)
			}
			if ms[len(ms)-1].h.Kind != fload.KindDone {
				t.Fatalf("last message %s", ms[len(ms)-1].h.Kind)
			}
			compare(t, loaded(t, ms, "orders"), dbRows(t, conn, "orders", "id"), "rev")
			// Chunk numbers only grow; a message id is never used twice
			// with other content.
			seen := map[string]string{}
			var last uint64
			for _, m := range ms {
				if m.h.Kind != fload.KindChunk {
					continue
				}
				if m.h.Chunk < last {
					t.Fatalf("chunk %d after %d", m.h.Chunk, last)
				}
				last = m.h.Chunk
				if prev, dup := seen[m.h.MsgID()]; dup && prev != string(m.body) {
					t.Fatalf("message id %s stored twice with other rows", m.h.MsgID())
				}
				seen[m.h.MsgID()] = string(m.body)
			}
			t.Logf("%d runs, %d messages", runs+1, len(ms))
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDumps(t *testing.T) {
	var jsonl strings.Builder
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&jsonl, `{"id": %d, "name": "n%d", "rev": %d}`+"\n", i, i, i+1)
	}
	good := writeFile(t, "orders.jsonl", jsonl.String())
	t.Run("JSONL", func(t *testing.T) {
		r := newRig(t)
		res, err := load.Run(context.Background(), r.st, load.Input{JSONL: good}, load.Table{Name: "orders", Key: []string{"id"}},
			load.Config{ChunkRows: 5, Mark: 7, HasMark: true})
		if err != nil || res.Rows != 12 {
			t.Fatalf("%+v, %v", res, err)
		}
		ms := r.messages(t)
		rows := loaded(t, ms, "orders")
		if got := string(rows["12"].After); got != `{"id":12,"name":"n12","rev":13}` {
			t.Errorf("image %s", got)
		}
		for _, m := range ms {
			if m.h.Kind == fload.KindChunk && m.h.LowSeq != 7 {
				t.Errorf("chunk %d: low watermark %d, want the mark 7", m.h.Chunk, m.h.LowSeq)
			}
		}
	})
	t.Run("JSONLVersionsWithoutMark", func(t *testing.T) {
		r := newRig(t)
		res, err := load.Run(context.Background(), r.st, load.Input{JSONL: good}, load.Table{Name: "orders", Key: []string{"id"}, VersionColumn: "rev"},
			load.Config{ChunkRows: 5})
		if err != nil || res.Rows != 12 {
			t.Fatalf("%+v, %v", res, err)
		}
		if v := loaded(t, r.messages(t), "orders")["3"].Version; v != 4 {
			t.Errorf("version %d, want 4", v)
		}
	})
	t.Run("NeedsMarkOrVersions", func(t *testing.T) {
		r := newRig(t)
		_, err := load.Run(context.Background(), r.st, load.Input{JSONL: good}, load.Table{Name: "orders", Key: []string{"id"}}, load.Config{})
		if !errors.Is(err, load.ErrInput) || !strings.Contains(err.Error(), "ferry load mark") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("CSV", func(t *testing.T) {
		r := newRig(t)
		p := writeFile(t, "lines.csv", "order_id,line_no,sku,qty\n1,1,\"a,\"\"b\"\"\",3\n1,2,x,\n2,1,\"multi\nline\",7\n")
		res, err := load.Run(context.Background(), r.st, load.Input{CSV: p}, load.Table{Name: "order_lines", Key: []string{"order_id", "line_no"}},
			load.Config{Mark: 1, HasMark: true, Numeric: []string{"order_id", "line_no", "qty"}})
		if err != nil || res.Rows != 3 {
			t.Fatalf("%+v, %v", res, err)
		}
		rows := loaded(t, r.messages(t), "order_lines")
		want := map[string]string{
			"1/1": `{"order_id":1,"line_no":1,"sku":"a,\"b\"","qty":3}`,
			"1/2": `{"order_id":1,"line_no":2,"sku":"x","qty":null}`,
			"2/1": `{"order_id":2,"line_no":1,"sku":"multi\nline","qty":7}`,
		}
		for k, w := range want {
			if got := string(rows[k].After); got != w {
				t.Errorf("%s: %s, want %s", k, got, w)
			}
		}
	})
	bad := []struct {
		name, file, content, want string
		csv                       bool
	}{
		{"JSONLMalformedLine", "d.jsonl", lines(12, 8, `{"id": 8, "name": `), "d.jsonl:8:", false},
		{"JSONLNoKey", "d.jsonl", lines(12, 9, `{"name": "x"}`), `d.jsonl:9: no key field "id"`, false},
		{"JSONLNotAnObject", "d.jsonl", lines(12, 6, `[1,2]`), "d.jsonl:6: not a JSON object", false},
		{"CSVBadQuote", "d.csv", "id,name\n1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n7,\"g\n", "d.csv:8:", true},
		{"CSVFieldCount", "d.csv", "id,name\n1,a\n2,b\n3,c\n4,d\n5,e\n6,f,x\n", "d.csv:7: 3 fields, the header has 2", true},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			p := writeFile(t, c.file, c.content)
			in := load.Input{JSONL: p}
			if c.csv {
				in = load.Input{CSV: p}
			}
			_, err := load.Run(context.Background(), r.st, in, load.Table{Name: "orders", Key: []string{"id"}}, load.Config{ChunkRows: 5, Mark: 1, HasMark: true})
			if !errors.Is(err, load.ErrDump) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrDump naming %q", err, c.want)
			}
			// The chunk holding the bad line (rows 6-10) sent nothing;
			// the chunk before it was sent whole; the load is failed.
			ms := r.messages(t)
			rows := loaded(t, ms, "orders")
			for i := 1; i <= 12; i++ {
				_, ok := rows[fmt.Sprint(i)]
				if ok != (i <= 5) {
					t.Errorf("row %d sent: %v", i, ok)
				}
			}
			if last := ms[len(ms)-1]; last.h.Kind != fload.KindFailed || !strings.Contains(string(last.body), c.want) {
				t.Errorf("last message %s %q, want failed naming the line", last.h.Kind, last.body)
			}
		})
	}
}

// lines returns n JSONL rows with line bad replaced.
func lines(n, bad int, with string) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i == bad {
			b.WriteString(with + "\n")
			continue
		}
		fmt.Fprintf(&b, `{"id": %d, "name": "n%d"}`+"\n", i, i)
	}
	return b.String()
}

func TestCheckRetention(t *testing.T) {
	now := time.Now()
	info := &jetstream.StreamInfo{Config: jetstream.StreamConfig{Name: "FERRY", MaxAge: 5 * time.Minute, MaxBytes: 1 << 30, MaxMsgs: 1000},
		State: jetstream.StreamState{Msgs: 900, Bytes: 1 << 20, FirstTime: now.Add(-time.Hour), LastTime: now}}
	ws := load.CheckRetention(info, 1_000_000, 100_000, now)
	if len(ws) != 2 {
		t.Fatalf("warnings %q, want max_age and max_msgs", ws)
	}
	if !strings.Contains(ws[0], "max_age") || !strings.Contains(ws[0], "nats stream edit FERRY --max-age") || !strings.Contains(ws[1], "max_msgs") {
		t.Fatalf("warnings %q", ws)
	}
	info.Config = jetstream.StreamConfig{Name: "FERRY"}
	if ws := load.CheckRetention(info, 1_000_000, 100_000, now); len(ws) != 0 {
		t.Fatalf("unlimited stream: %q", ws)
	}
}

// lossyStream is a server that restarted and lost its last messages: its
// epoch moves.
type lossyStream struct {
	load.Stream
	epoch atomic.Uint64
}

func (s *lossyStream) Epoch() uint64 { return s.epoch.Load() }

// TestLoadBrokerLostAcknowledged: the stream loses the last acknowledged
// chunks (a server restarted before writing them) while the load runs; the
// loader notices (the connection's epoch moved, and before done) and sends
// again from what the stream holds.
func TestLoadBrokerLostAcknowledged(t *testing.T) {
	c, conn := startPG(t)
	fillOrders(t, conn, 3000)
	r := newRig(t)
	ls := &lossyStream{Stream: r.st}
	ctx := context.Background()
	st, err := r.js.Stream(ctx, "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	cfg := load.Config{ChunkRows: 500, Progress: func(p load.Progress) {
		// Lose chunk 2 (then the loader reconnects), and the last chunk
		// (no reconnection seen: the check before done finds it).
		if !(p.Chunks == 3 && lost == 0) && !(p.Rows == 3000 && !p.Done && lost == 1) {
			return
		}
		// Lose the last chunk (every message after the one before it).
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, info.State.LastSeq)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
			t.Fatal(err)
		}
		lost++
		if p.Chunks == 3 {
			ls.epoch.Add(1) // a reconnection is how the loader hears of it
		}
	}}
	res, err := load.Run(ctx, ls, load.Input{PG: c.URL("postgres")}, load.Table{Name: "orders", VersionColumn: "rev"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if lost != 2 {
		t.Fatalf("lost %d chunks, want 2", lost)
	}
	ms := r.messages(t)
	compare(t, loaded(t, ms, "orders"), dbRows(t, conn, "orders", "id"), "rev")
	if ms[len(ms)-1].h.Kind != fload.KindDone {
		t.Fatalf("last message %s", ms[len(ms)-1].h.Kind)
	}
	t.Logf("%+v", res)
}

// crossingStream forces the race of a publish that crosses a reconnection:
// the last part of chunk 2 reaches a restarted server that lost the
// chunk's earlier parts (acknowledged before; deleted here), and the epoch
// moves just as it is sent.
type crossingStream struct {
	*load.JetStream
	st      jetstream.Stream
	epoch   atomic.Uint64
	parts   []uint64 // stream sequences of chunk 2's parts so far
	crossed bool
}

func (s *crossingStream) Epoch() uint64 { return s.epoch.Load() }

func (s *crossingStream) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	h, err := fload.ParseHeader(msg.Header)
	if err != nil || h.Kind != fload.KindChunk || h.Chunk != 2 || s.crossed {
		return s.JetStream.PublishAsync(msg)
	}
	if !h.Last {
		f, err := s.JetStream.PublishAsync(msg)
		if err == nil {
			select {
			case a := <-f.Ok():
				s.parts = append(s.parts, a.Sequence)
			case err := <-f.Err():
				return nil, err
			}
		}
		return &ackedFuture{f}, err
	}
	s.crossed = true
	for _, seq := range s.parts {
		if err := s.st.DeleteMsg(context.Background(), seq); err != nil {
			return nil, err
		}
	}
	s.epoch.Add(1)
	return s.JetStream.PublishAsync(msg)
}

// ackedFuture replays a future whose ack was already taken.
type ackedFuture struct{ jetstream.PubAckFuture }

func (f *ackedFuture) Ok() <-chan *jetstream.PubAck {
	c := make(chan *jetstream.PubAck, 1)
	c <- &jetstream.PubAck{}
	return c
}

// TestLoadPublishCrossingReconnection: a chunk's last part published as the
// client reconnected lands on a server that lost the chunk's earlier parts.
// The loader must not count that chunk as stored: the receiver's rows
// equal the table's.
func TestLoadPublishCrossingReconnection(t *testing.T) {
	c, conn := startPG(t)
	fillOrders(t, conn, 3000)
	r := newRig(t)
	st, err := r.js.Stream(context.Background(), "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	cs := &crossingStream{JetStream: r.st, st: st}
	cfg := load.Config{ChunkRows: 500, MessageBytes: 4 << 10}
	if _, err := load.Run(context.Background(), cs, load.Input{PG: c.URL("postgres")}, load.Table{Name: "orders", VersionColumn: "rev"}, cfg); err != nil {
		t.Fatal(err)
	}
	if !cs.crossed || len(cs.parts) == 0 {
		t.Fatalf("the race was not forced (crossed %v, %d parts before the last)", cs.crossed, len(cs.parts))
	}
	compare(t, loaded(t, r.messages(t), "orders"), dbRows(t, conn, "orders", "id"), "rev")
}
