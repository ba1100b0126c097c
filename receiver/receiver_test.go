package receiver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// genTxs makes n transactions of per ~200-byte JSON changes in table, keys
// <tag><tx>-<i>, committed now.
func genTxs(n, per int, table, tag string) []format.Tx {
	txs := make([]format.Tx, n)
	pad := strings.Repeat("x", 150)
	now := time.Now().UnixNano()
	for i := range txs {
		txs[i].CommitTime = now + int64(i)
		txs[i].ID = fmt.Sprintf("%s-%d", tag, i)
		for j := 0; j < per; j++ {
			txs[i].Changes = append(txs[i].Changes, format.Change{Table: table, Op: format.OpUpsert,
				Key: []byte(fmt.Sprintf("%s%06d-%03d", tag, i, j)), After: []byte(fmt.Sprintf(`{"i":%d,"j":%d,"pad":%q}`, i, j, pad))})
		}
	}
	return txs
}

type env struct {
	t   *testing.T
	srv *wiretest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *wiretest.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := wiretest.StartServer(t)
	nc, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	return &env{t: t, srv: srv, nc: nc, js: js, pub: &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}}
}

func (e *env) publish(msgs ...wiretest.Msg) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seq, err := e.pub.Publish(ctx, msgs...)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

func writeMsgs(t *testing.T, source string, txs []format.Tx, rotate, maxRaw int) []wiretest.Msg {
	dir := t.TempDir()
	wiretest.WriteSegments(t, dir, source, txs, rotate)
	return wiretest.Messages(t, dir, source, maxRaw)
}

type running struct {
	r      *receiver.Receiver
	http   *httptest.Server
	cancel context.CancelFunc
	done   chan error
}

func (e *env) start(dataDir string, opts ...receiver.Option) *running {
	e.t.Helper()
	opts = append([]receiver.Option{receiver.WithNATS(e.nc), receiver.WithDataDir(dataDir), receiver.WithReadyLag(time.Minute)}, opts...)
	r, err := receiver.New(opts...)
	if err != nil {
		e.t.Fatalf("receiver.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{r: r, http: httptest.NewServer(r.Handler()), cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- r.Run(ctx) }()
	e.t.Cleanup(run.stop)
	return run
}

func (run *running) stop() {
	if run.cancel == nil {
		return
	}
	run.http.CloseClientConnections()
	run.http.Close()
	run.cancel()
	<-run.done
	run.cancel = nil
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (run *running) waitApplied(t *testing.T, source string, m wiretest.Msg) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s applied up to %d:%d", source, m.Batch.Segment, m.Batch.To), 30*time.Second, func() bool {
		p := run.r.Positions()[source]
		return p.Segment > m.Batch.Segment || (p.Segment == m.Batch.Segment && p.Offset >= m.Batch.To)
	})
}

func getJSON(t *testing.T, url string, wantStatus int, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %s %s, want %d", url, resp.Status, body, wantStatus)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
}

type dump struct {
	Rows    []api.RowJSON
	Changes []api.ChangeJSON
}

// dumpStore reads every row of the tables and the whole change log, without
// the receiver-local applied times.
func dumpStore(t *testing.T, st *store.Store, tables ...string) dump {
	t.Helper()
	var d dump
	for _, tb := range tables {
		rows, _, err := st.Scan(tb, nil, nil, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rows {
			d.Rows = append(d.Rows, api.Row(&rows[i]))
		}
	}
	cs, err := st.Changes(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for i := range cs {
		c := api.Change(&cs[i])
		c.AppliedAt = time.Time{}
		d.Changes = append(d.Changes, c)
	}
	return d
}

func TestApplyAndReadBack(t *testing.T) {
	e := newEnv(t)
	txs := genTxs(100, 3, "orders", "o")
	// A delete, a binary image and a key with a slash.
	txs = append(txs, format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{
		{Table: "orders", Op: format.OpDelete, Key: []byte("o000001-000")},
		{Table: "blobs", Op: format.OpInsert, Key: []byte("a/b"), After: []byte{0, 1, 2, 0xff}, Content: format.ContentBinary},
	}})
	msgs := writeMsgs(t, "shop", txs, 40, 4096)
	e.publish(msgs...)
	run := e.start(t.TempDir())
	run.waitApplied(t, "shop", msgs[len(msgs)-1])
	base := run.http.URL

	var row api.RowJSON
	getJSON(t, base+"/v1/tables/orders/rows/o000042-001", 200, &row)
	var val map[string]any
	if err := json.Unmarshal(row.Value, &val); err != nil || val["i"] != 42.0 || val["j"] != 1.0 {
		t.Fatalf("value %s (%v), want i=42 j=1", row.Value, err)
	}
	if row.Op != "upsert" || row.Encoding != "json" || row.ContentType != "application/json" || row.Version.Source != "shop" ||
		row.CommitTime.UnixNano() != txs[42].CommitTime || row.ChangeID == 0 {
		t.Fatalf("row %+v", row)
	}
	var e404 struct{ Error, Code string }
	getJSON(t, base+"/v1/tables/orders/rows/o000001-000", 404, &e404) // deleted
	if e404.Code != "not_found" || !strings.Contains(e404.Error, "o000001-000") {
		t.Fatalf("404 body %+v", e404)
	}
	getJSON(t, base+"/v1/tables/orders/rows/nope", 404, nil)
	getJSON(t, base+"/v1/tables/blobs/rows/a/b", 200, &row)
	if row.Encoding != "base64" || string(row.Value) != `"AAEC/w=="` || row.ContentType != "application/octet-stream" {
		t.Fatalf("binary row %+v value %s", row, row.Value)
	}

	// Paged scan with a prefix: o00005* has 10 txs x 3 rows = 30 rows.
	var keys []string
	url := base + "/v1/tables/orders/rows?prefix=o00005&limit=7"
	for pages := 0; ; pages++ {
		var page struct {
			Rows    []api.RowJSON
			More    bool
			NextURL string `json:"next_url"`
		}
		getJSON(t, url, 200, &page)
		for _, r := range page.Rows {
			keys = append(keys, r.Key)
		}
		if !page.More {
			break
		}
		url = base + page.NextURL
		if pages > 10 {
			t.Fatal("too many pages")
		}
	}
	if len(keys) != 30 || keys[0] != "o000050-000" || keys[29] != "o000059-002" {
		t.Fatalf("scan returned %d keys %v", len(keys), keys)
	}
	for i := 1; i < len(keys); i++ {
		if keys[i] <= keys[i-1] {
			t.Fatalf("scan out of order at %d: %v", i, keys)
		}
	}

	// The change log, paged by cursor: every change once, in order.
	var ids []uint64
	after := uint64(0)
	for {
		var page struct {
			Changes []api.ChangeJSON
			Next    uint64
		}
		getJSON(t, fmt.Sprintf("%s/v1/changes?after=%d&limit=64", base, after), 200, &page)
		if len(page.Changes) == 0 {
			break
		}
		for _, c := range page.Changes {
			ids = append(ids, c.ID)
		}
		after = page.Next
	}
	if len(ids) != 302 {
		t.Fatalf("%d changes in the log, want 302", len(ids))
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("change %d has id %d", i, id)
		}
	}

	var st api.Status
	getJSON(t, base+"/v1/status", 200, &st)
	if len(st.Sources) != 1 || st.Sources[0].State != "ok" || st.Sources[0].Changes != 302 || st.Sources[0].Transactions != 101 ||
		st.Sources[0].AppliedOffset != msgs[len(msgs)-1].Batch.To || st.Sources[0].LastCommitTime == nil {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, "ready", 10*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	getJSON(t, base+"/healthz", 200, nil)

	// The lag gauge is refreshed once a second by the receiver's loop
	// (reading the status does not set it).
	var metrics []byte
	waitFor(t, "the lag gauge", 60*time.Second, func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(metrics), `ferry_receiver_lag_seconds{source="shop"}`)
	})
	for _, want := range []string{`ferry_receiver_applied_changes_total{source="shop"} 302`,
		`ferry_receiver_applied_transactions_total{source="shop"} 101`, "ferry_receiver_apply_seconds_count",
		`ferry_receiver_lag_seconds{source="shop"}`, "ferry_receiver_pebble_compactions_in_progress", "ferry_receiver_changelog_files 1",
		`ferry_receiver_http_request_seconds_count{route="GET /v1/tables/{table}/rows/{key...}"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("metrics lack %s:\n%s", want, metrics)
		}
	}

	// Bad requests are JSON errors.
	getJSON(t, base+"/v1/changes?after=x", 400, nil)
	getJSON(t, base+"/v1/tables/orders/rows?limit=100000", 400, nil)
	getJSON(t, base+"/v1/nothing", 404, nil)
}

func TestBearerToken(t *testing.T) {
	e := newEnv(t)
	run := e.start(t.TempDir(), receiver.WithToken("s3cret"))
	getJSON(t, run.http.URL+"/v1/status", 401, nil)
	getJSON(t, run.http.URL+"/healthz", 200, nil) // probes need no token
	req, _ := http.NewRequest("GET", run.http.URL+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with the token: %s", resp.Status)
	}
}

// A transaction split over many messages is seen whole or not at all by
// readers running while it is applied.
func TestSplitTransactionVisibleWhole(t *testing.T) {
	e := newEnv(t)
	run := e.start(t.TempDir())
	small := genTxs(1, 1, "other", "s")
	big := genTxs(1, 600, "big", "b") // ~120 KB, split into 4 KB parts
	msgs := writeMsgs(t, "src", append(small, big...), 0, 4096)
	parts := 0
	for _, m := range msgs {
		if m.Batch.Parts > 1 {
			parts++
		}
	}
	if parts < 10 {
		t.Fatalf("only %d parts", parts)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var sawWhole atomic.Bool
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := http.Get(run.http.URL + "/v1/tables/big/rows?limit=1000")
				if err != nil {
					errs <- err
					return
				}
				var page struct{ Rows []api.RowJSON }
				err = json.NewDecoder(resp.Body).Decode(&page)
				resp.Body.Close()
				if err != nil {
					errs <- err
					return
				}
				switch len(page.Rows) {
				case 0:
				case 600:
					sawWhole.Store(true)
				default:
					errs <- fmt.Errorf("a reader saw %d of the transaction's 600 rows", len(page.Rows))
					return
				}
			}
		}()
	}
	// Publish the parts slowly so that readers run between them.
	for _, m := range msgs {
		e.publish(m)
		time.Sleep(2 * time.Millisecond)
	}
	run.waitApplied(t, "src", msgs[len(msgs)-1])
	waitFor(t, "a reader to see the whole transaction", 10*time.Second, sawWhole.Load)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

type sseEvent struct {
	id   uint64
	data string
}

func readSSE(t *testing.T, url, lastID string, n int) []sseEvent {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var out []sseEvent
	var cur sseEvent
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.id, _ = strconv.ParseUint(line[4:], 10, 64)
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		case line == "" && cur.data != "":
			out = append(out, cur)
			cur = sseEvent{}
		}
	}
	if len(out) < n {
		t.Fatalf("read %d events, want %d (%v)", len(out), n, sc.Err())
	}
	return out
}

func TestSSEResume(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "s", genTxs(10, 2, "t", "k"), 0, 1024)
	e.publish(msgs...)
	run := e.start(t.TempDir())
	run.waitApplied(t, "s", msgs[len(msgs)-1])
	url := run.http.URL + "/v1/changes/stream"
	first := readSSE(t, url, "", 7)
	for i, ev := range first {
		var c api.ChangeJSON
		if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
			t.Fatal(err)
		}
		if ev.id != uint64(i+1) || c.ID != ev.id {
			t.Fatalf("event %d: id %d, change id %d", i, ev.id, c.ID)
		}
	}
	// Resume with Last-Event-ID (wins over ?after=): the next one is 8.
	more := readSSE(t, url+"?after=2", "7", 13)
	if more[0].id != 8 || more[12].id != 20 {
		t.Fatalf("resumed at %d..%d, want 8..20", more[0].id, more[12].id)
	}
	// Live: changes published while a client waits reach it.
	got := make(chan []sseEvent, 1)
	go func() { got <- readSSE(t, url+"?after=20", "", 2) }()
	time.Sleep(100 * time.Millisecond)
	txs2 := genTxs(1, 2, "t", "live")
	dir := t.TempDir()
	wiretest.WriteSegments(t, dir, "s2", txs2, 0)
	e.publish(wiretest.Messages(t, dir, "s2", 1<<20)...)
	select {
	case evs := <-got:
		if evs[0].id != 21 || !strings.Contains(evs[0].data, "live000000-000") {
			t.Fatalf("live events %+v", evs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("live change not delivered over SSE")
	}
}

func TestWebhookRetryOrder(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var accepted []uint64
	var calls int
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Changes []api.ChangeJSON }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%3 != 0 { // two failures before every success
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		first, _ := strconv.ParseUint(r.Header.Get("Ferry-First-Change-Id"), 10, 64)
		if len(body.Changes) == 0 || body.Changes[0].ID != first {
			http.Error(w, "bad header", 400)
			return
		}
		for _, c := range body.Changes {
			accepted = append(accepted, c.ID)
		}
	}))
	defer hook.Close()
	msgs := writeMsgs(t, "w", genTxs(400, 3, "t", "w"), 0, 8192) // 1200 changes: 3 batches of 500
	e.publish(msgs...)
	run := e.start(t.TempDir(), receiver.WithWebhook(hook.URL, ""))
	run.waitApplied(t, "w", msgs[len(msgs)-1])
	waitFor(t, "webhook delivery", 30*time.Second, func() bool { return run.r.Store().Webhook() == 1200 })
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) != 1200 {
		t.Fatalf("endpoint accepted %d changes, want 1200", len(accepted))
	}
	for i, id := range accepted {
		if id != uint64(i+1) {
			t.Fatalf("delivery %d is change %d: out of order or skipped", i, id)
		}
	}
	if calls < 9 {
		t.Fatalf("%d calls: the failures were not retried", calls)
	}
}

func TestRestartResumesAndRebuildEqualsLive(t *testing.T) {
	e := newEnv(t)
	data := t.TempDir()
	txsA := genTxs(300, 2, "t", "a")
	msgs := writeMsgs(t, "a", txsA, 100, 4096)
	half := len(msgs) / 2
	e.publish(msgs[:half]...)
	run := e.start(data)
	run.waitApplied(t, "a", msgs[half-1])
	run.stop()

	e.publish(msgs[half:]...)
	e.publish(msgs[:3]...) // republished (no dedup beyond the window): skipped by position
	run = e.start(data)
	run.waitApplied(t, "a", msgs[len(msgs)-1])
	waitFor(t, "the cursor to reach the end", 10*time.Second, func() bool {
		st := run.r.Status()
		return st.CaughtUp && st.MessagesPending == 0
	})
	live := dumpStore(t, run.r.Store(), "t")
	if len(live.Changes) != 600 {
		t.Fatalf("%d changes, want 600", len(live.Changes))
	}
	run.stop()

	run = e.start(data, receiver.WithRebuild(true))
	run.waitApplied(t, "a", msgs[len(msgs)-1])
	rebuilt := dumpStore(t, run.r.Store(), "t")
	if !reflect.DeepEqual(live, rebuilt) {
		t.Fatalf("rebuilt store differs: %d rows/%d changes vs %d/%d", len(rebuilt.Rows), len(rebuilt.Changes), len(live.Rows), len(live.Changes))
	}
}

func TestCorruptMessageStopsSourceOthersFlow(t *testing.T) {
	e := newEnv(t)
	ma := writeMsgs(t, "a", genTxs(50, 2, "t", "a"), 0, 2048)
	mb := writeMsgs(t, "b", genTxs(50, 2, "t", "b"), 0, 2048)
	run := e.start(t.TempDir())
	e.publish(ma[:2]...)
	bad := ma[2]
	bad.Raw = append([]byte(nil), bad.Raw...)
	bad.Raw[20] ^= 1
	badSeq := e.publish(bad)
	e.publish(ma[3:]...)
	e.publish(mb...)
	run.waitApplied(t, "b", mb[len(mb)-1])
	waitFor(t, "source a stopped", 10*time.Second, func() bool {
		for _, s := range run.r.Status().Sources {
			if s.Source == "a" && s.State == "stopped" {
				return true
			}
		}
		return false
	})
	st := run.r.Status()
	if st.Ready {
		t.Fatal("ready with a stopped source")
	}
	for _, s := range st.Sources {
		if s.Source == "a" {
			if s.AppliedOffset != bad.Batch.From || !strings.Contains(s.Error, "corrupt") ||
				!strings.Contains(s.Error, fmt.Sprintf("stream sequence %d", badSeq)) {
				t.Fatalf("source a: %+v", s)
			}
		}
	}
	getJSON(t, run.http.URL+"/readyz", 503, nil)
	// The polled tail of the stream says how far behind the stopped source is.
	waitFor(t, "the tail of source a in its status", 10*time.Second, func() bool {
		s := run.r.Status().Sources[0]
		return s.TailOffset == ma[len(ma)-1].Batch.To
	})
	if s := run.r.Status().Sources[0]; !s.Pending || s.BehindBytes != ma[len(ma)-1].Batch.To-bad.Batch.From {
		t.Fatalf("stopped source a: pending %v, behind %d bytes; want true, %d", s.Pending, s.BehindBytes, ma[len(ma)-1].Batch.To-bad.Batch.From)
	}
	if s := run.r.Status().Sources[1]; s.Pending || s.BehindBytes != 0 {
		t.Fatalf("caught-up source b: %+v", s)
	}
	resp, err := http.Get(run.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `ferry_receiver_errors_total{kind="corrupt",source="a"} 1`) {
		t.Fatalf("no corrupt error metric:\n%s", m)
	}
	// After a restart the corrupt message is read again (the cursor stayed
	// before it) and still refused; a good re-ship then resumes the source.
	data := run.r.Store().Dir()
	run.stop()
	run = e.start(filepath.Dir(data))
	waitFor(t, "source a stopped again", 10*time.Second, func() bool {
		s := run.r.Status()
		return len(s.Sources) == 2 && s.Sources[0].State == "stopped"
	})
	// Same ranges, new message ids (a shipper's repair): not dropped as
	// duplicates of the corrupt copy.
	repair := append([]wiretest.Msg(nil), ma[2:]...)
	for i := range repair {
		repair[i].Batch.Repair = 1
	}
	e.publish(repair...)
	run.waitApplied(t, "a", ma[len(ma)-1])
	if s := run.r.Status().Sources[0]; s.State != "ok" || s.Changes != 100 {
		t.Fatalf("source a after the re-ship: %+v", s)
	}
}

func TestStreamRecreatedIsRescanned(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "r", genTxs(60, 2, "t", "r"), 0, 2048)
	e.publish(msgs[:10]...)
	data := t.TempDir()
	run := e.start(data)
	run.waitApplied(t, "r", msgs[9])
	run.stop()
	// The stream is lost and recreated; the shipper re-ships from the start
	// of what it still has: sequences restart at 1.
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "FERRY"); err != nil {
		t.Fatal(err)
	}
	wiretest.CreateStream(t, e.js, "FERRY", "ferry")
	e.publish(msgs...)
	run = e.start(data)
	run.waitApplied(t, "r", msgs[len(msgs)-1])
	d := dumpStore(t, run.r.Store(), "t")
	if len(d.Changes) != 120 || len(d.Rows) != 120 {
		t.Fatalf("%d changes, %d rows; want 120 each", len(d.Changes), len(d.Rows))
	}
}

func TestCheckpointSeedsNewReceiver(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "c", genTxs(100, 2, "t", "c"), 0, 2048)
	e.publish(msgs[:20]...)
	ckdir := t.TempDir()
	run := e.start(t.TempDir(), receiver.WithCheckpointDir(ckdir))
	run.waitApplied(t, "c", msgs[19])
	resp, err := http.Post(run.http.URL+"/v1/checkpoint", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ck struct{ Checkpoint string }
	json.NewDecoder(resp.Body).Decode(&ck)
	resp.Body.Close()
	if resp.StatusCode != 200 || ck.Checkpoint == "" {
		t.Fatalf("checkpoint: %s %+v", resp.Status, ck)
	}
	e.publish(msgs[20:]...)
	run.waitApplied(t, "c", msgs[len(msgs)-1])

	seeded := t.TempDir()
	if err := os.Rename(ck.Checkpoint, filepath.Join(seeded, receiver.StoreDir)); err != nil {
		t.Fatal(err)
	}
	run2 := e.start(seeded)
	if p := run2.r.Positions()["c"]; p.Offset < msgs[19].Batch.To && p.Segment == msgs[19].Batch.Segment {
		t.Fatalf("seeded receiver starts at %d:%d, before the checkpoint's position", p.Segment, p.Offset)
	}
	run2.waitApplied(t, "c", msgs[len(msgs)-1])
	if a, b := dumpStore(t, run.r.Store(), "t"), dumpStore(t, run2.r.Store(), "t"); !reflect.DeepEqual(a, b) {
		t.Fatalf("seeded receiver differs: %d/%d changes", len(b.Changes), len(a.Changes))
	}
}

// The stream is lost and recreated under a running receiver (a broker that
// lost its data): sequences restart, the receiver notices, rescans from the
// start and skips by position what it applied.
func TestStreamRecreatedUnderRunningReceiver(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "r", genTxs(60, 2, "t", "r"), 0, 1024)
	e.publish(msgs[:20]...)
	run := e.start(t.TempDir())
	run.waitApplied(t, "r", msgs[19])
	if err := e.js.DeleteStream(context.Background(), "FERRY"); err != nil {
		t.Fatal(err)
	}
	wiretest.CreateStream(t, e.js, "FERRY", "ferry")
	e.publish(msgs[10:]...) // the shipper re-ships from what the stream lost
	run.waitApplied(t, "r", msgs[len(msgs)-1])
	d := dumpStore(t, run.r.Store(), "t")
	if len(d.Changes) != 120 {
		t.Fatalf("%d changes, want 120", len(d.Changes))
	}
}

func TestSourcesFilter(t *testing.T) {
	e := newEnv(t)
	ma := writeMsgs(t, "a", genTxs(10, 1, "t", "a"), 0, 1024)
	mb := writeMsgs(t, "b", genTxs(10, 1, "t", "b"), 0, 1024)
	e.publish(ma...)
	e.publish(mb...)
	run := e.start(t.TempDir(), receiver.WithSources("b", "c"))
	run.waitApplied(t, "b", mb[len(mb)-1])
	if _, ok := run.r.Positions()["a"]; ok {
		t.Fatal("source a applied though not selected")
	}
	st := run.r.Status()
	if st.Ready || !strings.Contains(st.NotReadyReason, "source c") {
		t.Fatalf("ready=%v (%s) while source c has nothing applied", st.Ready, st.NotReadyReason)
	}
	if len(st.Sources) != 2 || st.Sources[1].Source != "c" || st.Sources[1].State != "waiting" {
		t.Fatalf("sources %+v", st.Sources)
	}
}

// The webhook's delivery position survives a restart: what was acknowledged
// is not sent again, and new changes continue from there.
func TestWebhookPositionSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var got []uint64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Changes []api.ChangeJSON }
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		for _, c := range body.Changes {
			got = append(got, c.ID)
		}
		mu.Unlock()
	}))
	defer hook.Close()
	msgs := writeMsgs(t, "w", genTxs(20, 1, "t", "w"), 0, 1024)
	data := t.TempDir()
	e.publish(msgs[:len(msgs)/2]...)
	run := e.start(data, receiver.WithWebhook(hook.URL, ""))
	run.waitApplied(t, "w", msgs[len(msgs)/2-1])
	first := run.r.Store().Position("w").Changes
	waitFor(t, "first deliveries", 10*time.Second, func() bool { return run.r.Store().Webhook() == first })
	run.stop()
	e.publish(msgs[len(msgs)/2:]...)
	run = e.start(data, receiver.WithWebhook(hook.URL, ""))
	run.waitApplied(t, "w", msgs[len(msgs)-1])
	waitFor(t, "all deliveries", 10*time.Second, func() bool { return run.r.Store().Webhook() == 20 })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 20 {
		t.Fatalf("endpoint got %d changes %v, want 20 (once each)", len(got), got)
	}
	for i, id := range got {
		if id != uint64(i+1) {
			t.Fatalf("delivery %d is change %d", i, id)
		}
	}
}

// The NATS server goes away and comes back (same store): the receiver
// reconnects, resumes after its cursor and misses nothing.
func TestNATSServerRestart(t *testing.T) {
	storeDir := t.TempDir()
	opts := func() *server.Options {
		return &server.Options{Host: "127.0.0.1", Port: freePort(t), JetStream: true, StoreDir: storeDir, NoLog: true, NoSigs: true}
	}
	o := opts()
	port := o.Port
	start := func() *server.Server {
		o := opts()
		o.Port = port
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		return s
	}
	s := start()
	defer func() { s.Shutdown() }()
	url := s.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	e := &env{t: t, nc: nc, js: js, pub: &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecS2}}
	msgs := writeMsgs(t, "n", genTxs(200, 2, "t", "n"), 0, 2048)
	e.publish(msgs[:len(msgs)/2]...)
	run := e.start(t.TempDir())
	run.waitApplied(t, "n", msgs[len(msgs)/2-1])

	s.Shutdown()
	s.WaitForShutdown()
	time.Sleep(200 * time.Millisecond)
	s = start()
	waitFor(t, "the client to reconnect", 20*time.Second, nc.IsConnected)
	e.publish(msgs[len(msgs)/2:]...)
	run.waitApplied(t, "n", msgs[len(msgs)-1])
	if d := dumpStore(t, run.r.Store(), "t"); len(d.Changes) != 400 {
		t.Fatalf("%d changes, want 400", len(d.Changes))
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// --rebuild on the data directory of a running receiver is refused before
// anything is deleted: the store takes its lock first.
func TestRebuildRefusedWhileRunning(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "shop", genTxs(20, 2, "orders", "a"), 0, 4096)
	e.publish(msgs...)
	data := t.TempDir()
	run := e.start(data)
	run.waitApplied(t, "shop", msgs[len(msgs)-1])
	before := dumpStore(t, run.r.Store(), "orders")
	files := func() []string {
		var names []string
		filepath.WalkDir(filepath.Join(data, receiver.StoreDir), func(p string, _ os.DirEntry, _ error) error {
			names = append(names, p)
			return nil
		})
		return names
	}
	filesBefore := files()

	_, err := receiver.New(receiver.WithNATS(e.nc), receiver.WithDataDir(data), receiver.WithRebuild(true))
	if got := files(); !reflect.DeepEqual(got, filesBefore) {
		t.Fatalf("a rebuild beside a running receiver changed its store's files:\n%v\nwere\n%v", got, filesBefore)
	}
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("rebuild beside a running receiver: %v, want a refusal naming the lock", err)
	}
	if after := dumpStore(t, run.r.Store(), "orders"); !reflect.DeepEqual(before, after) {
		t.Fatalf("the running receiver's store changed under a refused rebuild")
	}
	run.stop()
	// Stopped, the rebuild goes ahead and rebuilds the same state.
	run2 := e.start(data, receiver.WithRebuild(true))
	run2.waitApplied(t, "shop", msgs[len(msgs)-1])
	if after := dumpStore(t, run2.r.Store(), "orders"); !reflect.DeepEqual(before, after) {
		t.Fatalf("rebuilt store differs from the original")
	}
}

// Lag is the age of the oldest change not yet applied: a source whose last
// write was long ago but is fully applied does not lag (and the receiver
// stays ready); a source stopped before a message lags by that message's
// age.
func TestLagIsAgeOfOldestUnapplied(t *testing.T) {
	e := newEnv(t)
	txs := genTxs(12, 2, "t", "idle")
	hourAgo := time.Now().Add(-time.Hour).UnixNano()
	for i := range txs {
		txs[i].CommitTime = hourAgo + int64(i)
	}
	msgs := writeMsgs(t, "idle", txs, 0, 1024)
	if len(msgs) < 4 {
		t.Fatalf("only %d messages", len(msgs))
	}
	e.publish(msgs[:len(msgs)-2]...)
	run := e.start(t.TempDir(), receiver.WithReadyLag(2*time.Second))
	run.waitApplied(t, "idle", msgs[len(msgs)-3])
	// Everything in the stream is applied: ready, lag 0, an hour after
	// the last commit.
	waitFor(t, "ready with an idle, fully applied source", 30*time.Second, func() bool {
		resp, err := http.Get(run.http.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	var st api.Status
	getJSON(t, run.http.URL+"/v1/status", 200, &st)
	if len(st.Sources) != 1 || st.Sources[0].LagSeconds != 0 || st.Sources[0].AliveAt == nil || time.Since(*st.Sources[0].AliveAt) < 50*time.Minute {
		t.Fatalf("status of an idle applied source: %+v", st.Sources)
	}
	// The last message arrives without the one before it: the source stops
	// there, and lags by the age of what it cannot apply.
	e.publish(msgs[len(msgs)-1])
	waitFor(t, "the source stopped and lagging by the unapplied message's age", 30*time.Second, func() bool {
		var st api.Status
		getJSON(t, run.http.URL+"/v1/status", 200, &st)
		return len(st.Sources) == 1 && st.Sources[0].State == "stopped" && st.Sources[0].LagSeconds > 3000 && !st.Ready
	})
}

// Garbage on the stream's subjects costs a bounded amount: /v1/status lists
// at most MaxStatusSources (real sources first), /metrics has no label per
// garbage name, and tail polling makes a bounded number of requests.
func TestGarbageSubjectsBounded(t *testing.T) {
	e := newEnv(t)
	msgs := writeMsgs(t, "shop", genTxs(20, 2, "t", "shop"), 0, 2048)
	e.publish(msgs[:len(msgs)/2]...)
	ctx := context.Background()
	const garbage = 300
	for i := range garbage {
		if _, err := e.pub.PublishRaw(ctx, fmt.Sprintf("g%04d", i), map[string][]string{"X": {"y"}}, []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(msgs[len(msgs)/2:]...)
	run := e.start(t.TempDir())
	run.waitApplied(t, "shop", msgs[len(msgs)-1])
	var st api.Status
	waitFor(t, "every garbage subject seen", 30*time.Second, func() bool {
		getJSON(t, run.http.URL+"/v1/status", 200, &st)
		return st.SourcesTotal == garbage+1
	})
	if len(st.Sources) != receiver.MaxStatusSources || st.SourcesOmitted != garbage+1-receiver.MaxStatusSources || st.Sources[0].Source != "shop" {
		t.Fatalf("status lists %d sources (omitted %d), first %q", len(st.Sources), st.SourcesOmitted, st.Sources[0].Source)
	}
	resp, err := http.Get(run.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(metricsText), `source="g0`); n > 0 {
		t.Fatalf("/metrics has %d series labelled with garbage sources", n)
	}
	// Tail polling (every 2 s) asks about at most 64 sources per round:
	// count the message get requests the receiver makes.
	var gets atomic.Int64
	for _, subj := range []string{"$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>"} {
		sub, err := e.nc.Subscribe(subj, func(*nats.Msg) { gets.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Unsubscribe() })
	}
	e.nc.Flush()
	time.Sleep(4500 * time.Millisecond) // two poll rounds or three
	if n := gets.Load(); n > 3*(64+8) || n == 0 {
		t.Fatalf("%d message get requests in 4.5 s with %d garbage subjects", n, garbage)
	}
	t.Logf("%d message get requests in 4.5 s with %d garbage subjects", gets.Load(), garbage)
}
