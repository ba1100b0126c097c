package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/faults"
	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/writeback"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/shipper/inbox"
	"github.com/jackc/pgx/v5"
)

// writebackEnv, when set, makes the test binary the write-back legacy: the
// PostgreSQL applier consuming the inbox (bench/writeback), plus the
// legacy's own writes of the hot rows, as a process that can be killed.
const writebackEnv = "FERRY_FAULTS_WRITEBACK"

// wbLegacy configures the write-back legacy process.
type wbLegacy struct {
	PG      string // connection URL
	Changes string // change files directory
	Inbox   string
	Source  string
	Table   string
	// HotKeys rows the legacy itself rewrites every OwnEvery (0: never).
	HotKeys  int
	OwnEvery time.Duration
}

const (
	wbSource = "shop"
	wbTable  = "accounts"
)

func writebackMain(cfg string) int {
	var l wbLegacy
	if err := json.Unmarshal([]byte(cfg), &l); err != nil {
		fmt.Fprintln(os.Stderr, "write-back legacy config:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := l.run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "write-back legacy:", err)
		return 1
	}
	return 0
}

func (l wbLegacy) run(ctx context.Context) error {
	conns := make([]*pgx.Conn, 3)
	for i := range conns {
		c, err := pgx.Connect(ctx, l.PG)
		if err != nil {
			return err
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}
	w, err := format.OpenWriter(l.Changes, l.Source, format.WithSync(format.SyncAlways, 0), format.WithHeartbeat(100*time.Millisecond),
		format.WithResolver(func(ctx context.Context, _ format.Position, tx *format.Tx) (format.Decision, error) {
			return writeback.Resolve(ctx, conns[2], tx.ID)
		}))
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Fprintf(os.Stderr, "write-back legacy: writer open, %d transactions in doubt\n", len(w.InDoubt()))
	ap := writeback.NewApplier(conns[0], w, l.Table)
	own := writeback.NewApplier(conns[1], w, l.Table)
	errc := make(chan error, 1)
	if l.HotKeys > 0 && l.OwnEvery > 0 {
		go func() {
			// The legacy's own users write the hot rows too: commands
			// race with writes that do not come from any service.
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					errc <- nil
					return
				case <-time.After(l.OwnEvery):
				}
				k := fmt.Sprintf("k%d", rng.IntN(l.HotKeys))
				if _, err := own.Write(ctx, l.Table, k, []byte(fmt.Sprintf(`{"n":%d,"by":"legacy"}`, i))); err != nil && ctx.Err() == nil {
					errc <- err
					return
				}
			}
		}()
	}
	err = inbox.Consume(ctx, l.Inbox, inbox.ConsumeConfig{}, func(ctx context.Context, cmds []command.Command) error {
		err := ap.Handle(ctx, cmds)
		if err != nil {
			fmt.Fprintln(os.Stderr, "write-back legacy: handling an inbox file:", err)
		}
		return err
	})
	if err != nil {
		return err
	}
	if l.HotKeys > 0 && l.OwnEvery > 0 {
		return <-errc
	}
	return nil
}

func startPG(t *testing.T) *pg.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "64MB"})
	if errors.Is(err, pg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (run `make deps`): %v", err)
	}
	must(t, err)
	t.Cleanup(func() { c.Stop() })
	return c
}

// wbOutcome is what a service learnt of one of its commands.
type wbOutcome struct {
	req    api.CommandRequest
	state  string
	reason string
}

// TestFaultWriteBackKill9 runs the circular path with real processes —
// nats-server, `ferry ship --inbox` (shipper and write-back agent), two
// `ferry receive` sidecars with write-back (two services), the PostgreSQL
// applier as its own process — and kills each of them with SIGKILL at
// random moments while the services submit commands on hot rows (and the
// legacy's own users write the same rows). Then: every command has exactly
// one outcome, the same at both receivers and in the legacy's record; an
// applied command was carried out once in PostgreSQL (an audit trigger
// counts the writes) and has exactly one committed record in the change
// files, a rejected one none; a row the legacy deleted is never
// resurrected; the inbox ends empty; both receivers equal the database row
// by row. Two brokers: a durable one (sync_interval: always) and the
// default, which a kill -9 can make lose messages it acknowledged (commands,
// changes and outcomes alike): services then resubmit, the stream's
// de-duplication and the legacy's id record drop what was already there.
func TestFaultWriteBackKill9(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []faults.NATSOption
	}{
		{"durable-broker", []faults.NATSOption{faults.WithSyncAlways()}},
		{"default-broker", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeBackKill9(t, c.opts...)
		})
	}
}

func writeBackKill9(t *testing.T, opts ...faults.NATSOption) {
	cluster := startPG(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgx.Connect(ctx, cluster.URL("postgres"))
	must(t, err)
	defer conn.Close(context.Background())
	must(t, writeback.CreateSchema(ctx, conn, wbTable))
	// The audit: every write of the table, with the command id its image
	// carries, so that a command carried out twice shows.
	for _, s := range []string{
		`CREATE TABLE audit (op text NOT NULL, key text NOT NULL, cmd text)`,
		`CREATE FUNCTION audit_write() RETURNS trigger AS $$ BEGIN
			IF TG_OP = 'DELETE' THEN INSERT INTO audit VALUES (TG_OP, OLD.key, NULL); RETURN OLD; END IF;
			INSERT INTO audit VALUES (TG_OP, NEW.key, NEW.value->>'cmd'); RETURN NEW; END $$ LANGUAGE plpgsql`,
		`CREATE TRIGGER audit_write AFTER INSERT OR UPDATE OR DELETE ON ` + wbTable + ` FOR EACH ROW EXECUTE FUNCTION audit_write()`,
	} {
		_, err := conn.Exec(ctx, s)
		must(t, err)
	}

	r := newRig(t, 1, opts...)
	r.createStream(1)
	inboxDir := filepath.Join(r.changes, "inbox")
	const hot = 8
	{ // the legacy's rows before the canary
		w, err := format.OpenWriter(r.changes, wbSource, format.WithSync(format.SyncAlways, 0))
		must(t, err)
		ap := writeback.NewApplier(conn, w, wbTable)
		for i := range hot {
			_, err := ap.Write(ctx, wbTable, fmt.Sprintf("k%d", i), []byte(`{"n":0,"by":"legacy"}`))
			must(t, err)
		}
		must(t, w.Close())
	}
	cfg, err := json.Marshal(wbLegacy{PG: cluster.URL("postgres"), Changes: r.changes, Inbox: inboxDir, Source: wbSource, Table: wbTable,
		HotKeys: hot, OwnEvery: 50 * time.Millisecond})
	must(t, err)
	legacy := &faults.Process{Name: "legacy", Bin: os.Args[0], Args: []string{"-test.run=^$"}, Env: []string{writebackEnv + "=" + string(cfg)},
		Log: filepath.Join(r.root, "legacy.log"), Restart: 300 * time.Millisecond}
	t.Cleanup(func() { legacy.Kill() })
	sh := r.shipper(wbSource, "--inbox", inboxDir)
	names := []string{"svc-a", "svc-b"}
	rcs := map[string]*receiver{}
	for _, n := range names {
		rcs[n] = r.receiver(n, "--origin", n, "--command-table", wbTable+"="+wbSource, "--exclude-origin", n)
	}
	startAll(t, legacy, sh, rcs["svc-a"].Process, rcs["svc-b"].Process)

	perWorker := size(15, 200)
	const workers = 3
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var mu sync.Mutex
	outcomes := map[string]*wbOutcome{}
	// The services write until the faults are over (and at least
	// perWorker commands each).
	var faultsDone atomic.Bool
	var wg sync.WaitGroup
	for _, n := range names {
		cl, err := api.NewClient("http://"+rcs[n].http, "", &http.Client{Timeout: 20 * time.Second})
		must(t, err)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(w+1)*31+uint64(len(n))))
				svc := &wbService{t: t, ctx: ctx, cl: cl, name: n}
				var order string // this worker's last order, and its version
				var orderVer uint64
				for i := 0; i < perWorker || !faultsDone.Load(); i++ {
					id := fmt.Sprintf("%s.%d.%d", n, w, i)
					var req api.CommandRequest
					switch {
					case i%5 == 3:
						order = "o-" + id
						req = api.CommandRequest{ID: id, Table: wbTable, Key: order, Op: "insert", After: json.RawMessage(fmt.Sprintf(`{"cmd":%q,"qty":%d}`, id, i))}
					case i%5 == 4 && orderVer > 0:
						// Delete the order, then update it at the version
						// read before the delete: refused, not resurrected.
						req = api.CommandRequest{ID: id, Table: wbTable, Key: order, Op: "delete", Version: orderVer}
						o := svc.run(req)
						record(&mu, outcomes, id, &o.wbOutcome)
						if o.state != "applied" {
							t.Errorf("delete %s of %s at its version: %s %q", id, order, o.state, o.reason)
						}
						id2 := id + ".late"
						req2 := api.CommandRequest{ID: id2, Table: wbTable, Key: order, Op: "update", After: json.RawMessage(fmt.Sprintf(`{"cmd":%q}`, id2)), Version: orderVer}
						o2 := svc.run(req2)
						record(&mu, outcomes, id2, &o2.wbOutcome)
						if o2.state != "rejected" || !strings.Contains(o2.reason, "does not exist") {
							t.Errorf("update %s of the deleted %s: %s %q, want rejected: row does not exist", id2, order, o2.state, o2.reason)
						}
						orderVer = 0
						continue
					default:
						k := fmt.Sprintf("k%d", rng.IntN(hot))
						req = api.CommandRequest{ID: id, Table: wbTable, Key: k, Op: "update",
							After: json.RawMessage(fmt.Sprintf(`{"cmd":%q,"n":%d}`, id, i)), Version: svc.rowVersion(k)}
					}
					o := svc.run(req)
					record(&mu, outcomes, id, &o.wbOutcome)
					if req.Op == "insert" {
						orderVer = 0
						if o.state == "applied" {
							orderVer = o.version
						} else {
							t.Errorf("insert %s of a new key: %s %q", id, o.state, o.reason)
						}
					}
				}
			}()
		}
	}
	workDone := make(chan struct{})
	go func() { wg.Wait(); close(workDone) }()

	// Faults: every round kills each process once, in a random order.
	rng := rand.New(rand.NewPCG(seed, 99))
	kills := map[string]int{}
	procs := []*faults.Process{rcs["svc-a"].Process, rcs["svc-b"].Process, sh, legacy, r.nats[0].Process}
	rounds := size(2, 6)
	var order []int
	for k := 0; k < rounds*len(procs); k++ {
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		if len(order) == 0 {
			order = rng.Perm(len(procs))
		}
		p := procs[order[0]]
		order = order[1:]
		must(t, p.Kill())
		kills[p.Name]++
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		if p == r.nats[0].Process {
			must(t, r.nats[0].Start(ctx))
		} else {
			must(t, p.Start())
		}
	}
	faultsDone.Store(true)
	<-workDone
	if t.Failed() {
		return
	}

	// Every command has one outcome, the same everywhere.
	db := wbCommandsInDB(t, conn)
	applied, rejected := 0, 0
	for id, o := range outcomes {
		d, ok := db[id]
		switch {
		case !ok:
			t.Errorf("command %s is %s at its service but the legacy has no record of it", id, o.state)
		case d[0] != o.state:
			t.Errorf("command %s: %s at its service, %s in the legacy", id, o.state, d[0])
		case o.state == "rejected" && (o.reason == "" || o.reason != d[1]):
			t.Errorf("command %s rejected with reason %q, the legacy recorded %q", id, o.reason, d[1])
		}
		if o.state == "applied" {
			applied++
		} else {
			rejected++
		}
	}
	for id := range db {
		if _, ok := outcomes[id]; !ok {
			t.Errorf("the legacy recorded command %s that no service submitted", id)
		}
	}
	for _, n := range names {
		cl, _ := api.NewClient("http://"+rcs[n].http, "", nil)
		for id, o := range outcomes {
			c := wbWait(t, ctx, cl, id)
			if c.State != o.state || c.Reason != o.reason {
				t.Errorf("%s says command %s is %s %q, its service learnt %s %q", n, id, c.State, c.Reason, o.state, o.reason)
			}
		}
	}
	// Carried out once in PostgreSQL: one audited write per applied
	// insert or update, none for a rejected command.
	audit := map[string]int{}
	rows, err := conn.Query(ctx, `SELECT cmd, count(*) FROM audit WHERE cmd IS NOT NULL GROUP BY cmd`)
	must(t, err)
	for rows.Next() {
		var id string
		var n int
		must(t, rows.Scan(&id, &n))
		audit[id] = n
	}
	must(t, rows.Err())
	for id, o := range outcomes {
		want := 0
		if o.state == "applied" && o.req.Op != "delete" {
			want = 1
		}
		if audit[id] != want {
			t.Errorf("command %s (%s %s, %s): %d writes in PostgreSQL, want %d", id, o.req.Op, o.req.Key, o.state, audit[id], want)
		}
	}
	// One record in the change files: a committed transaction for an
	// applied command, none for a rejected one (which has rejection
	// frames: a redelivery after a crash may write it again).
	recs := wbRecords(t, r.changes)
	for id, o := range outcomes {
		rc := recs[id]
		switch {
		case o.state == "applied" && (rc.committed != 1 || rc.rejections != 0):
			t.Errorf("applied command %s: %d committed transactions and %d rejections in the change files, want 1 and 0", id, rc.committed, rc.rejections)
		case o.state == "rejected" && (rc.committed != 0 || rc.rejections == 0):
			t.Errorf("rejected command %s: %d committed transactions and %d rejections in the change files, want 0 and at least 1", id, rc.committed, rc.rejections)
		}
	}
	// The agent removed every inbox file (all outcomes seen).
	waitFor(t, 2*time.Minute, "the inbox to empty", func() (bool, string) {
		fs, err := inbox.List(inboxDir)
		if err != nil {
			return false, err.Error()
		}
		return len(fs) == 0, fmt.Sprintf("%d inbox files left", len(fs))
	})
	// The receivers equal the database, row by row.
	for _, n := range names {
		wbEqualToDB(t, ctx, conn, "http://"+rcs[n].http)
	}
	var ks []string
	total := 0
	for k, n := range kills {
		ks = append(ks, fmt.Sprintf("%s=%d", k, n))
		total += n
	}
	sort.Strings(ks)
	t.Logf("FIGURES write-back kill -9: %d commands (%d applied, %d rejected), %d kills (%s); every command one outcome, applied once, receivers equal to PostgreSQL",
		len(outcomes), applied, rejected, total, strings.Join(ks, " "))
	for _, p := range []*faults.Process{rcs["svc-a"].Process, rcs["svc-b"].Process, sh} {
		noCrash(t, p, false)
	}
}

func record(mu *sync.Mutex, m map[string]*wbOutcome, id string, o *wbOutcome) {
	mu.Lock()
	m[id] = o
	mu.Unlock()
}

// wbService is one worker of a service: it submits through its receiver
// and retries as a service would (same id) across the receiver's crashes.
type wbService struct {
	t    *testing.T
	ctx  context.Context
	cl   *api.Client
	name string
}

type wbResult struct {
	wbOutcome
	version uint64
}

// run submits req until the receiver takes it, then waits for its outcome,
// submitting it again if the receiver lost it (a crash before its record
// was durable).
func (s *wbService) run(req api.CommandRequest) *wbResult {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		_, err := s.cl.SubmitCommand(s.ctx, req)
		var ae *api.Error
		if errors.As(err, &ae) && ae.StatusCode/100 == 4 {
			s.t.Errorf("%s: command %s refused: %v", s.name, req.ID, err)
			return &wbResult{wbOutcome: wbOutcome{req: req, state: "refused"}}
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// Pending for 5 s: submitted again (a service's retry). The
		// stream's acknowledgement is not durability: a nats-server killed
		// right after it can lose the message, and only a resubmission
		// publishes it again.
		for time.Now().Before(deadline) {
			c, err := s.cl.Command(s.ctx, req.ID, 5*time.Second)
			if err != nil {
				if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
					time.Sleep(100 * time.Millisecond)
				}
				break // submitted again
			}
			if c.State != "pending" {
				return &wbResult{wbOutcome: wbOutcome{req: req, state: c.State, reason: c.Reason}, version: c.Version}
			}
			break
		}
	}
	s.t.Errorf("%s: command %s has no outcome after 5 minutes", s.name, req.ID)
	return &wbResult{wbOutcome: wbOutcome{req: req, state: "none"}}
}

// rowVersion reads the row's version from the service's receiver.
func (s *wbService) rowVersion(key string) uint64 {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var row api.RowJSON
		err := s.cl.Get(s.ctx, "/v1/tables/"+wbTable+"/rows/"+url.PathEscape(key), nil, &row)
		if err == nil {
			return row.RowVersion
		}
		if s.ctx.Err() != nil {
			return 0
		}
		if time.Now().After(deadline) {
			s.t.Errorf("%s: reading row %s for 2 minutes: %v", s.name, key, err)
			return 1 // the command goes, and is refused as stale
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wbWait waits for a command's outcome at a receiver.
func wbWait(t *testing.T, ctx context.Context, cl *api.Client, id string) api.CommandJSON {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := cl.Command(ctx, id, 5*time.Second)
		if err == nil && c.State != "pending" {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s at %s: %+v %v after 2 minutes", id, cl.Base(), c, err)
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// wbCommandsInDB returns the legacy's command records: id -> outcome, reason.
func wbCommandsInDB(t *testing.T, conn *pgx.Conn) map[string][2]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id, outcome, coalesce(reason, '') FROM `+writeback.CommandsTable)
	must(t, err)
	defer rows.Close()
	out := map[string][2]string{}
	for rows.Next() {
		var id, o, reason string
		must(t, rows.Scan(&id, &o, &reason))
		out[id] = [2]string{o, reason}
	}
	must(t, rows.Err())
	return out
}

type wbRecord struct{ committed, rejections int }

// wbRecords reads the change files for command records: committed
// transactions carrying a command id (a prepared one once an outcome frame
// says committed) and rejection frames.
func wbRecords(t *testing.T, dir string) map[string]wbRecord {
	t.Helper()
	segs, err := format.ListSegments(dir, wbSource)
	must(t, err)
	out := map[string]wbRecord{}
	prepared := map[format.Position]string{}
	var tx format.Tx
	var oc format.Outcome
	for _, sf := range segs {
		rd, f, err := format.OpenReader(sf.Path, 0)
		if errors.Is(err, format.ErrTornTail) {
			continue // created by a writer killed before its header was whole
		}
		must(t, err)
		for {
			fr, err := rd.Next()
			if errors.Is(err, io.EOF) || errors.Is(err, format.ErrTornTail) {
				break
			}
			must(t, err)
			switch fr.Type {
			case format.FrameTx:
				must(t, format.DecodeTx(fr.Payload, &tx))
				if tx.Command == "" {
					continue
				}
				if tx.Prepared {
					prepared[format.Position{Segment: sf.Segment, Offset: rd.Offset()}] = tx.Command
					continue
				}
				rc := out[tx.Command]
				rc.committed++
				out[tx.Command] = rc
			case format.FrameOutcome:
				must(t, format.DecodeOutcome(fr.Payload, &oc))
				for _, res := range oc.Resolutions {
					id, ok := prepared[res.Prepared]
					if !ok {
						continue
					}
					delete(prepared, res.Prepared)
					if res.Decision == format.DecisionCommitted {
						rc := out[id]
						rc.committed++
						out[id] = rc
					}
				}
			case format.FrameRejection:
				rj, err := format.DecodeRejection(fr.Payload)
				must(t, err)
				rc := out[rj.Command]
				rc.rejections++
				out[rj.Command] = rc
			}
		}
		f.Close()
	}
	for pos, id := range prepared {
		t.Errorf("command %s: its prepared transaction at %v has no outcome in the change files", id, pos)
	}
	return out
}

// wbEqualToDB waits until the receiver's rows equal the database's (value
// and row version), and fails with the differences if they do not.
func wbEqualToDB(t *testing.T, ctx context.Context, conn *pgx.Conn, base string) {
	t.Helper()
	cl, err := api.NewClient(base, "", nil)
	must(t, err)
	waitFor(t, 2*time.Minute, base+" to equal the database", func() (bool, string) {
		want := map[string]string{}
		rows, err := conn.Query(ctx, `SELECT key, value::text, version FROM `+wbTable)
		must(t, err)
		for rows.Next() {
			var k, v string
			var ver int64
			must(t, rows.Scan(&k, &v, &ver))
			want[k] = fmt.Sprintf("%s@%d", canonJSON(t, []byte(v)), ver)
		}
		must(t, rows.Err())
		got := map[string]string{}
		after := ""
		for {
			var page struct {
				Rows []api.RowJSON `json:"rows"`
			}
			if err := cl.Get(ctx, "/v1/tables/"+wbTable+"/rows", url.Values{"after": {after}, "limit": {"1000"}}, &page); err != nil {
				return false, err.Error()
			}
			for _, r := range page.Rows {
				got[r.Key] = fmt.Sprintf("%s@%d", canonJSON(t, r.Value), r.RowVersion)
			}
			if len(page.Rows) < 1000 {
				break
			}
			after = page.Rows[len(page.Rows)-1].Key
		}
		var diff []string
		for k, w := range want {
			if got[k] != w {
				diff = append(diff, fmt.Sprintf("row %s = %q, database %q", k, got[k], w))
			}
		}
		for k, g := range got {
			if _, ok := want[k]; !ok {
				diff = append(diff, fmt.Sprintf("row %s = %q is not in the database", k, g))
			}
		}
		sort.Strings(diff)
		if len(diff) > 10 {
			diff = append(diff[:10], fmt.Sprintf("... %d more", len(diff)-10))
		}
		return len(diff) == 0, strings.Join(diff, "\n")
	})
}

func canonJSON(t *testing.T, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// waitFor waits until cond holds, failing with its last word after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s", what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
