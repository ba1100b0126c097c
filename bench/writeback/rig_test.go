package writeback_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/writeback"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/inbox"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/jackc/pgx/v5"
)

const (
	source = "shop"
	table  = "accounts"
)

// rig is the whole circular path in one process, on real parts: PostgreSQL
// (the legacy database), its change files, the shipper, embedded JetStream,
// receivers with write-back, the inbox agent and the applier.
type rig struct {
	t         testing.TB
	cluster   *pg.Cluster
	connMu    sync.Mutex
	conn      *pgx.Conn // the test's own connection (checks), under connMu
	srv       *wiretest.Server
	changeDir string
	inboxDir  string
	w         *format.Writer
	ap        *writeback.Applier
	svcs      map[string]*service
	agent     *inbox.Agent
	agentCfg  inbox.Config
	stopAgent func() // stops the agent and waits for it
	ctx       context.Context
}

// rigConfig changes the rig's defaults.
type rigConfig struct {
	afterCommit bool
	rescanBack  time.Duration // the agent's (0: its default)
}

type service struct {
	r   *receiver.Receiver
	url string

	hookMu sync.Mutex
	hooked []api.ChangeJSON // what the service's webhook received
}

// webhook returns what the service's webhook endpoint received so far.
func (s *service) webhook() []api.ChangeJSON {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	return append([]api.ChangeJSON(nil), s.hooked...)
}

func startPG(t testing.TB) *pg.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "64MB"})
	if errors.Is(err, pg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (run `make deps`): %v", err)
	}
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

func connect(t testing.TB, c *pg.Cluster) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// newRig starts everything; services names the receivers (each its own
// origin), each leaving its own changes out of its SSE feed.
func newRig(t testing.TB, afterCommit bool, services ...string) *rig {
	return newRigWith(t, rigConfig{afterCommit: afterCommit}, services...)
}

func newRigWith(t testing.TB, cfg rigConfig, services ...string) *rig {
	afterCommit := cfg.afterCommit
	ctx, cancel := context.WithCancel(context.Background())
	rg := &rig{t: t, cluster: startPG(t), changeDir: t.TempDir(), svcs: map[string]*service{}, ctx: ctx}
	rg.inboxDir = filepath.Join(rg.changeDir, "inbox")
	rg.conn = connect(t, rg.cluster)
	if err := writeback.CreateSchema(ctx, rg.conn, table); err != nil {
		t.Fatal(err)
	}
	apConn := connect(t, rg.cluster)
	resolveConn := connect(t, rg.cluster)
	w, err := format.OpenWriter(rg.changeDir, source, format.WithSync(format.SyncAlways, 0), format.WithHeartbeat(50*time.Millisecond),
		format.WithResolver(func(ctx context.Context, _ format.Position, tx *format.Tx) (format.Decision, error) {
			return writeback.Resolve(ctx, resolveConn, tx.ID)
		}))
	if err != nil {
		t.Fatal(err)
	}
	rg.w = w
	rg.ap = writeback.NewApplier(apConn, w, table)
	rg.ap.AfterCommit = afterCommit
	rg.srv = wiretest.StartServer(t)

	var stops []func()
	t.Cleanup(func() {
		cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		w.Close()
	})
	run := func(name string, f func(context.Context) error) {
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		stops = append(stops, func() {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	nc, _ := rg.srv.Connect(t)
	shp, err := shipper.NewGroup(nc, jsclient.Config{}, []shipper.SourceConfig{{Name: source, Dir: rg.changeDir}})
	if err != nil {
		t.Fatal(err)
	}
	run("shipper", shp.Run)
	for _, name := range services {
		svc := &service{}
		// The service's webhook endpoint: it records what it is sent.
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			var b struct {
				Changes []api.ChangeJSON `json:"changes"`
			}
			if err := json.NewDecoder(req.Body).Decode(&b); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			svc.hookMu.Lock()
			svc.hooked = append(svc.hooked, b.Changes...)
			svc.hookMu.Unlock()
		}))
		rnc, _ := rg.srv.Connect(t)
		r, err := receiver.New(receiver.WithNATS(rnc), receiver.WithDataDir(t.TempDir()),
			receiver.WithCommands(name, map[string]string{table: source}), receiver.WithExcludeOrigins(name),
			receiver.WithWebhook(hook.URL, ""))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(r.Handler())
		stops = append(stops, hs.Close, hook.Close)
		run("receiver "+name, r.Run)
		svc.r, svc.url = r, hs.URL
		rg.svcs[name] = svc
	}
	rg.agentCfg = inbox.Config{Source: source, ChangeDir: rg.changeDir, Dir: rg.inboxDir, RescanBack: cfg.rescanBack}
	rg.startAgent()
	stops = append(stops, func() { rg.stopAgent() })
	run("applier", func(ctx context.Context) error {
		return inbox.Consume(ctx, rg.inboxDir, inbox.ConsumeConfig{}, rg.ap.Handle)
	})
	return rg
}

// startAgent starts an inbox agent (a new one: a restart after stopAgent),
// which reads the state its predecessor saved.
func (rg *rig) startAgent() {
	t := rg.t
	_, js := rg.srv.Connect(t)
	a, err := inbox.New(js, rg.agentCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(rg.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	rg.agent = a
	rg.stopAgent = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent: %v", err)
		}
	})
}

// submit posts a command to a service's receiver and returns the status
// code and the decoded answer (CommandJSON, or an error document).
func (s *service) submit(t testing.TB, req api.CommandRequest) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(req)
	return s.post(t, b)
}

func (s *service) post(t testing.TB, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(s.url+"/v1/commands", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST /v1/commands: %d %q: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, out
}

// wait waits for a command's outcome (GET ?wait=) until it has one.
func (s *service) wait(t testing.TB, id string) api.CommandJSON {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.url + "/v1/commands/" + id + "?wait=5s")
		if err != nil {
			t.Fatal(err)
		}
		var c api.CommandJSON
		err = json.NewDecoder(resp.Body).Decode(&c)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/commands/%s: %d %v", id, resp.StatusCode, err)
		}
		if c.State != "pending" {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s still pending; agent %+v", id, time.Now())
		}
	}
}

// dbRows reads the legacy's table: key -> (value, version).
func (rg *rig) dbRows(t testing.TB) map[string]dbRow {
	t.Helper()
	rg.connMu.Lock()
	defer rg.connMu.Unlock()
	rows, err := rg.conn.Query(context.Background(), `SELECT key, value::text, version FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dbRow{}
	for rows.Next() {
		var k, v string
		var ver int64
		if err := rows.Scan(&k, &v, &ver); err != nil {
			t.Fatal(err)
		}
		out[k] = dbRow{value: canon(t, []byte(v)), version: uint64(ver)}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type dbRow struct {
	value   string
	version uint64
}

func canon(t testing.TB, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// version returns the row's version in the database.
func (rg *rig) version(t testing.TB, key string) uint64 {
	t.Helper()
	var v int64
	rg.connMu.Lock()
	defer rg.connMu.Unlock()
	if err := rg.conn.QueryRow(context.Background(), `SELECT version FROM `+table+` WHERE key = $1`, key).Scan(&v); err != nil {
		t.Fatalf("version of %s: %v", key, err)
	}
	return uint64(v)
}

// equalToDB waits until every receiver's rows equal the database's, row by
// row, and fails with the differences if they do not within the timeout.
func (rg *rig) equalToDB(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		want := rg.dbRows(t)
		diff := ""
		for name, s := range rg.svcs {
			rows, _, err := s.r.Store().Scan(table, nil, nil, 100000)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, r := range rows {
				got[string(r.Key)] = canon(t, r.Value)
			}
			for k, w := range want {
				if got[k] != w.value {
					diff += fmt.Sprintf("%s: row %s = %q, database %q\n", name, k, got[k], w.value)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					diff += fmt.Sprintf("%s: row %s not in the database\n", name, k)
				}
			}
		}
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("receivers differ from the database:\n%s", diff)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// commandsInDB returns the legacy's command records: id -> outcome.
func (rg *rig) commandsInDB(t testing.TB) map[string]string {
	t.Helper()
	rg.connMu.Lock()
	defer rg.connMu.Unlock()
	rows, err := rg.conn.Query(context.Background(), `SELECT id, outcome FROM `+writeback.CommandsTable)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, o string
		if err := rows.Scan(&id, &o); err != nil {
			t.Fatal(err)
		}
		out[id] = o
	}
	return out
}

// commandsInStream counts the messages of the commands stream.
func (rg *rig) commandsInStream(t testing.TB) uint64 {
	t.Helper()
	_, js := rg.srv.Connect(t)
	st, err := js.Stream(context.Background(), command.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// changesOf returns a receiver's change log (GET /v1/changes).
func changesOf(t testing.TB, base string) []api.ChangeJSON {
	t.Helper()
	resp, err := http.Get(base + "/v1/changes?after=0&limit=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Changes []api.ChangeJSON `json:"changes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	return page.Changes
}

// readSSE reads the change feed of a receiver from the start until it has
// every change that /v1/changes lists with another origin than the
// receiver's excluded one (origin), and returns what it read.
func readSSE(t testing.TB, base, origin string) []api.ChangeJSON {
	t.Helper()
	resp, err := http.Get(base + "/v1/changes?after=0&limit=10000")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Changes []api.ChangeJSON `json:"changes"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, c := range page.Changes {
		if c.Origin != origin {
			want++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/changes/stream?after=0", nil)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	var out []api.ChangeJSON
	sc := bufio.NewScanner(sresp.Body)
	sc.Buffer(nil, 1<<20)
	for len(out) < want && sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var c api.ChangeJSON
			if err := json.Unmarshal([]byte(d), &c); err != nil {
				t.Fatalf("SSE data %q: %v", d, err)
			}
			out = append(out, c)
		}
	}
	if len(out) < want {
		t.Fatalf("SSE feed ended after %d of %d changes: %v", len(out), want, sc.Err())
	}
	return out
}
