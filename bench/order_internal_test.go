package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/jackc/pgx/v5"
)

// crashChildEnv, when set, makes the test binary a legacy process (so that
// a test can kill -9 it): its value is a crashChild as JSON.
const crashChildEnv = "FERRY_BENCH_CRASH_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(crashChildEnv); cfg != "" {
		os.Exit(crashChildMain(cfg))
	}
	if cfg := os.Getenv(loadChildEnv); cfg != "" {
		os.Exit(loadChildMain(cfg))
	}
	if cfg := os.Getenv(recvChildEnv); cfg != "" {
		os.Exit(recvChildMain(cfg))
	}
	if cfg := os.Getenv(loadBenchChildEnv); cfg != "" {
		os.Exit(loadBenchChildMain(cfg))
	}
	if os.Getenv(loadPhaseChildEnv) != "" {
		os.Exit(loadPhaseChildMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// crashChild is a legacy process: it opens the change-file writer in Dir
// (resolving a crashed predecessor's in-doubt frames with PostgreSQL), runs
// Txs transactions of workload stream Stream by the prepared protocol, then
// closes the writer. At every crash point of its transaction StopAt it
// prints "AT <point>" and waits for a line on stdin (the test kills it
// there, or lets it go on).
type crashChild struct {
	URL, Dir string
	Workload workload.Config
	Stream   int
	Txs      int
	StopAt   int64
}

func crashChildMain(cfgJSON string) int {
	var c crashChild
	if err := json.Unmarshal([]byte(cfgJSON), &c); err != nil {
		fmt.Fprintln(os.Stderr, "crash child config:", err)
		return 2
	}
	if err := c.run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	return 0
}

func (c crashChild) run(ctx context.Context) error {
	w, err := format.OpenWriter(c.Dir, fileSource, format.WithSync(format.SyncAlways, 0), format.WithResolver(pgResolver(c.URL, time.Minute)))
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Printf("OPEN in-doubt %d\n", len(w.InDoubt()))
	l, err := openLegacy(ctx, c.URL, c.Workload, []changeSink{w}, WriterProtocol{Order: OrderPrepared, Versions: true}, false)
	if err != nil {
		return err
	}
	defer l.close()
	in := bufio.NewReader(os.Stdin)
	l.hook = func(worker int, n int64, at crashPoint) {
		if n == c.StopAt {
			fmt.Printf("AT %s\n", at)
			in.ReadString('\n')
		}
	}
	s, conn := l.streams[c.Stream], l.conns[c.Stream]
	var stmts []workload.Statement
	var ftx format.Tx
	for n := int64(1); n <= int64(c.Txs); n++ {
		tx := s.Next()
		stmts = tx.Statements(stmts[:0])
		if err := l.transact(ctx, conn, tx, stmts, &ftx, c.Stream, n, nil); err != nil {
			return fmt.Errorf("transaction %d: %w", n, err)
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Println("DONE")
	return nil
}

// childProcess is a running crashChild.
type childProcess struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	log   *bytes.Buffer
}

func startChild(t *testing.T, c crashChild) *childProcess {
	t.Helper()
	cfg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+string(cfg))
	p := &childProcess{cmd: cmd, lines: make(chan string, 16), log: &bytes.Buffer{}}
	cmd.Stderr = p.log
	if p.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// next returns the child's next line of output ("" once it has exited).
func (p *childProcess) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-time.After(2 * time.Minute):
		t.Fatalf("the legacy process said nothing for 2 minutes; its log:\n%s", p.log)
		return ""
	}
}

func (p *childProcess) goOn(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.in, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// kill kills the process with SIGKILL and waits for it.
func (p *childProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
}

// crashGateLock is the advisory lock that holds a COMMIT at the server:
// the test database's deferred trigger on stock takes it (shared) at every
// COMMIT of a transaction that updated stock.
const crashGateLock = 4242

func startTestCluster(t *testing.T, ctx context.Context) *pg.Cluster {
	t.Helper()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "64MB"})
	if errors.Is(err, pg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (run `make deps`): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestCrashOutcomes kills the legacy process (kill -9 of a real process) in
// the prepared protocol at each point where its transaction's outcome is
// not in the change files: after the frame was appended and before COMMIT
// (the database rolls back), after COMMIT returned and before the outcome
// was recorded (committed), and while COMMIT is at the server with the
// writer's fsync of the frame under way (held there by a deferred trigger;
// then let through: committed, or its backend terminated: rolled back).
// The next legacy process resolves the in-doubt frame by asking PostgreSQL
// (pg_xact_status of the txid in Tx.ID) and goes on; then the files are
// shipped and applied, and the receiver's rows must be the database's, row
// by row, with the killed transaction applied exactly when it committed.
func TestCrashOutcomes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := startTestCluster(t, ctx)
	admin := connect(t, ctx, c.URL("postgres"))
	for i, tc := range []struct {
		name  string
		point crashPoint
		abort bool // terminate the backend held in COMMIT
		want  format.Decision
	}{
		{"BeforeCommit", pointPrepared, false, format.DecisionAborted},
		{"AfterCommit", pointCommitted, false, format.DecisionCommitted},
		{"MidFsyncCommitted", pointCommitting, false, format.DecisionCommitted},
		{"MidFsyncRolledBack", pointCommitting, true, format.DecisionAborted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := fmt.Sprintf("crash_%d", i)
			if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
				t.Fatal(err)
			}
			url := c.URL(db)
			wl := workload.Config{Seed: uint64(7 + i), Streams: 2, Customers: 40, Products: 40, Orders: 40, HotRows: 3, HotPct: 100}.WithDefaults()
			if err := loadInitial(ctx, url, wl); err != nil {
				t.Fatal(err)
			}
			conn := connect(t, ctx, url)
			for _, ddl := range []string{
				fmt.Sprintf(`CREATE FUNCTION crash_gate() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared(%d); RETURN NULL; END $$`, crashGateLock),
				`CREATE CONSTRAINT TRIGGER crash_gate AFTER UPDATE ON stock DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crash_gate()`,
			} {
				if _, err := conn.Exec(ctx, ddl); err != nil {
					t.Fatal(err)
				}
			}
			br, err := startBroker()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(br.stop)
			m, err := newFilePipeline(br, wire.CodecZstd)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.close)
			w, err := format.OpenWriter(m.dir, fileSource)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := writeInitial([]*format.Writer{w}, wl, true); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			// The first legacy process, killed in transaction 20.
			child := startChild(t, crashChild{URL: url, Dir: m.dir, Workload: wl, Stream: 0, Txs: 40, StopAt: 20})
			gate := connect(t, ctx, url) // holds crashGateLock
			backend := 0
			for killed := false; !killed; {
				line := child.next(t)
				at, ok := strings.CutPrefix(line, "AT ")
				switch {
				case line == "":
					t.Fatalf("the legacy process exited before its crash point; its log:\n%s", child.log)
				case !ok:
					continue
				case crashPoint(at) == tc.point:
					if tc.point == pointCommitting {
						backend = waitHeldInCommit(t, ctx, conn)
					}
					child.kill(t)
					killed = true
				default:
					if tc.point == pointCommitting && crashPoint(at) == pointPrepared {
						if _, err := gate.Exec(ctx, "SELECT pg_advisory_lock($1)", crashGateLock); err != nil {
							t.Fatal(err)
						}
					}
					child.goOn(t)
				}
			}
			if tc.point == pointCommitting {
				if tc.abort {
					if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", backend); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := gate.Exec(ctx, "SELECT pg_advisory_unlock($1)", crashGateLock); err != nil {
					t.Fatal(err)
				}
			}
			// The frame the process left without an outcome, and what the
			// database did with its transaction.
			doubt := unresolved(t, m.dir)
			if len(doubt) != 1 {
				t.Fatalf("%d prepared frames without an outcome after the kill, want 1: %v", len(doubt), doubt)
			}
			var pos format.Position
			var txid string
			for p, id := range doubt {
				pos, txid = p, id
			}
			if got := xactStatus(t, ctx, conn, txid); got != tc.want {
				t.Fatalf("the database says transaction %s %v, want %v", txid, got, tc.want)
			}

			// The next process resolves it at once and goes on.
			next := startChild(t, crashChild{URL: url, Dir: m.dir, Workload: wl, Stream: 1, Txs: 30})
			if line := next.next(t); line != "OPEN in-doubt 0" {
				t.Fatalf("restarted legacy: %q, want every in-doubt frame resolved at open (log:\n%s)", line, next.log)
			}
			for line := ""; line != "DONE"; {
				if line = next.next(t); line == "" {
					t.Fatalf("the restarted legacy process failed; its log:\n%s", next.log)
				}
			}
			if got := outcomeOf(t, m.dir, pos); got != tc.want {
				t.Fatalf("the files record %v for the in-doubt transaction %s at %v, want %v", got, txid, pos, tc.want)
			}

			// What any receiver should hold, from the files alone, and
			// what the receiver holds: the database's rows.
			truth := readTruth(t, m.dir)
			if fc, err := compareState(ctx, conn, truth); err != nil || fc.Differ != 0 {
				t.Fatalf("the change files' state against the database: %+v, %v", fc, err)
			}
			if err := m.start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.startReceiver(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.settle(ctx, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			sc, err := compareState(ctx, conn, m.rcv.Store())
			if err != nil {
				t.Fatal(err)
			}
			if sc.Rows == 0 || sc.Differ != 0 {
				t.Fatalf("receiver against the database: %d rows compared, %d differ: %v", sc.Rows, sc.Differ, sc.Examples)
			}
			if applied := changeLogHas(t, m.rcv.Store(), txid); applied != (tc.want == format.DecisionCommitted) {
				t.Fatalf("the killed transaction %s (%v in the database) is in the receiver's change log: %v", txid, tc.want, applied)
			}
			t.Logf("killed at %s: transaction %s %v, resolved in the files; receiver = database over %d rows", tc.point, txid, tc.want, sc.Rows)
		})
	}
}

// waitHeldInCommit waits until a backend waits for crashGateLock (a COMMIT
// held by the gate trigger) and returns its pid.
func waitHeldInCommit(t *testing.T, ctx context.Context, conn *pgx.Conn) int {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var pid int
		err := conn.QueryRow(ctx, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted", crashGateLock).Scan(&pid)
		if err == nil {
			return pid
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
	}
	t.Fatal("no COMMIT held by the gate after a minute")
	return 0
}

// xactStatus asks the database what became of transaction txid, once it is
// no longer in progress.
func xactStatus(t *testing.T, ctx context.Context, conn *pgx.Conn, txid string) format.Decision {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var s *string
		if err := conn.QueryRow(ctx, "SELECT pg_xact_status($1::xid8)", txid).Scan(&s); err != nil {
			t.Fatal(err)
		}
		switch {
		case s == nil:
			t.Fatalf("the database does not know transaction %s", txid)
		case *s == "committed":
			return format.DecisionCommitted
		case *s == "aborted":
			return format.DecisionAborted
		}
	}
	t.Fatalf("transaction %s still in progress after a minute", txid)
	return format.DecisionUnknown
}

// readFrames calls fn with every frame of every source's segments in dir,
// in order (source by source), its source and its position.
func readFrames(t *testing.T, dir string, fn func(src string, pos format.Position, fr format.Frame)) {
	t.Helper()
	segs, err := format.ListSegments(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, sf := range segs {
		rd, f, err := format.OpenReader(sf.Path, 0)
		if errors.Is(err, format.ErrTornTail) {
			continue // created, never written (a killed writer)
		}
		if err != nil {
			t.Fatal(err)
		}
		for {
			fr, err := rd.Next()
			if err == io.EOF || errors.Is(err, format.ErrTornTail) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			fn(sf.Source, format.Position{Segment: sf.Segment, Offset: rd.Offset()}, fr)
		}
		f.Close()
	}
}

// unresolved returns the prepared frames in dir that no outcome names, with
// their transaction ids.
func unresolved(t *testing.T, dir string) map[format.Position]string {
	t.Helper()
	out := map[format.Position]string{}
	var tx format.Tx
	var o format.Outcome
	readFrames(t, dir, func(_ string, pos format.Position, fr format.Frame) {
		switch fr.Type {
		case format.FrameTx:
			if err := format.DecodeTx(fr.Payload, &tx); err != nil {
				t.Fatal(err)
			}
			if tx.Prepared {
				out[pos] = tx.ID
			}
		case format.FrameOutcome:
			if err := format.DecodeOutcome(fr.Payload, &o); err != nil {
				t.Fatal(err)
			}
			for _, r := range o.Resolutions {
				delete(out, r.Prepared)
			}
		}
	})
	return out
}

// outcomeOf returns the decision the files record for the prepared frame at
// pos (DecisionUnknown if none).
func outcomeOf(t *testing.T, dir string, pos format.Position) format.Decision {
	t.Helper()
	d := format.DecisionUnknown
	var o format.Outcome
	readFrames(t, dir, func(_ string, _ format.Position, fr format.Frame) {
		if fr.Type != format.FrameOutcome {
			return
		}
		if err := format.DecodeOutcome(fr.Payload, &o); err != nil {
			t.Fatal(err)
		}
		for _, r := range o.Resolutions {
			if r.Prepared == pos {
				d = r.Decision
			}
		}
	})
	return d
}

// filesTruth is the state the change files of one source describe (format
// SPEC): committed frames applied in file order, a prepared frame applied
// when its outcome says committed and dropped when aborted, and a change
// applied to a row only if newer than what wrote it last (a greater version
// when both have one, else a later position).
type filesTruth map[string]map[string]truthRow

type truthRow struct {
	value   []byte // nil: deleted
	version uint64
	source  string
	pos     [3]int64 // segment, offset, index
}

// framePos is a frame's identity: its source and position.
type framePos struct {
	src string
	pos format.Position
}

func readTruth(t *testing.T, dir string) filesTruth {
	t.Helper()
	truth := filesTruth{}
	parked := map[framePos]format.Tx{}
	apply := func(src string, pos format.Position, tx *format.Tx) {
		for i, c := range tx.Changes {
			rows := truth[c.Table]
			if rows == nil {
				rows = map[string]truthRow{}
				truth[c.Table] = rows
			}
			at := [3]int64{int64(pos.Segment), pos.Offset, int64(i)}
			if cur, ok := rows[string(c.Key)]; ok {
				newer := c.Version > cur.version
				if (c.Version == 0 || cur.version == 0) && src == cur.source {
					newer = at[0] > cur.pos[0] || at[0] == cur.pos[0] && (at[1] > cur.pos[1] || at[1] == cur.pos[1] && at[2] > cur.pos[2])
				} else if c.Version == 0 || cur.version == 0 {
					newer = true // another source, no versions: arrival order
				}
				if !newer {
					continue
				}
			}
			r := truthRow{version: c.Version, source: src, pos: at}
			if c.Op != format.OpDelete {
				r.value = bytes.Clone(c.After)
			}
			rows[string(c.Key)] = r
		}
	}
	var tx format.Tx
	var o format.Outcome
	readFrames(t, dir, func(src string, pos format.Position, fr format.Frame) {
		switch fr.Type {
		case format.FrameTx:
			if err := format.DecodeTx(fr.Payload, &tx); err != nil {
				t.Fatal(err)
			}
			if tx.Prepared {
				c := tx
				c.Changes = nil
				for _, ch := range tx.Changes {
					ch.Key, ch.After = bytes.Clone(ch.Key), bytes.Clone(ch.After)
					c.Changes = append(c.Changes, ch)
				}
				parked[framePos{src, pos}] = c
				return
			}
			apply(src, pos, &tx)
		case format.FrameOutcome:
			if err := format.DecodeOutcome(fr.Payload, &o); err != nil {
				t.Fatal(err)
			}
			for _, r := range o.Resolutions {
				fp := framePos{src, r.Prepared}
				p, ok := parked[fp]
				if !ok {
					continue
				}
				delete(parked, fp)
				if r.Decision == format.DecisionCommitted {
					apply(src, r.Prepared, &p)
				}
			}
		}
	})
	if len(parked) > 0 {
		t.Fatalf("%d prepared frames left without an outcome in the files", len(parked))
	}
	return truth
}

// Scan makes a filesTruth a rowScanner, for compareState.
func (ft filesTruth) Scan(table string, prefix, after []byte, limit int) ([]store.Row, bool, error) {
	var keys []string
	for k, r := range ft[table] {
		if r.value != nil && strings.HasPrefix(k, string(prefix)) && (after == nil || store.CompareKeys([]byte(k), after) > 0) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return store.CompareKeys([]byte(a), []byte(b)) })
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]store.Row, len(keys))
	for i, k := range keys {
		out[i] = store.Row{Table: table, Key: []byte(k), Value: ft[table][k].value}
	}
	return out, more, nil
}

// CompareKeys: a filesTruth scans in the order of a new store.
func (filesTruth) CompareKeys(a, b []byte) int { return store.CompareKeys(a, b) }

// changeLogHas says whether the receiver's change log holds a change of
// transaction txid.
func changeLogHas(t *testing.T, st *store.Store, txid string) bool {
	t.Helper()
	first, _ := st.ChangeRange()
	after := uint64(0)
	if first > 0 {
		after = first - 1
	}
	for {
		chs, err := st.Changes(after, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chs {
			if c.TxID == txid {
				return true
			}
			after = c.ID
		}
		if len(chs) < 10000 {
			return false
		}
	}
}

// TestContendedRows runs 8 legacy workers on 20 hot rows (every transaction
// takes stock from one, UPDATE … RETURNING) against PostgreSQL. With the
// prepared protocol the change files hold every transaction in the
// database's commit order (no frame writes a row with a lower rev than an
// earlier frame did) and the receiver ends holding the database's rows,
// row by row. With the after-commit protocol the files get frames out of
// commit order — what made receivers serve stale rows (issue 11); whether a
// row's last write is among them, and so whether the rows end different, is
// a matter of chance, so that is logged, not asserted.
func TestContendedRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := startTestCluster(t, ctx)
	admin := connect(t, ctx, c.URL("postgres"))
	for i, tc := range []struct {
		proto   WriterProtocol
		sources int
	}{
		{WriterProtocol{Order: OrderPrepared}, 1},
		{WriterProtocol{Order: OrderAfterCommit}, 1},
		// Two app servers writing the same rows: their frames meet only
		// at the receiver, and row versions order them there.
		{WriterProtocol{Order: OrderPrepared, Versions: true}, 2},
	} {
		proto := tc.proto
		t.Run(fmt.Sprintf("%s/sources=%d", proto, tc.sources), func(t *testing.T) {
			db := fmt.Sprintf("contended_%d", i)
			if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
				t.Fatal(err)
			}
			url := c.URL(db)
			wl := workload.Config{Seed: uint64(11 + i), Streams: 8, Customers: 400, Products: 400, Orders: 400, HotRows: 20, HotPct: 100}.WithDefaults()
			if err := loadInitial(ctx, url, wl); err != nil {
				t.Fatal(err)
			}
			conn := connect(t, ctx, url)
			br, err := startBroker()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(br.stop)
			m, err := newFilePipeline(br, wire.CodecZstd)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.close)
			var ws []*format.Writer
			var sinks []changeSink
			m.sources = nil
			for s := 0; s < tc.sources; s++ {
				w, err := format.OpenWriter(m.dir, sourceName(s), format.WithSync(format.SyncAlways, 0))
				if err != nil {
					t.Fatal(err)
				}
				ws, sinks, m.sources = append(ws, w), append(sinks, w), append(m.sources, sourceName(s))
			}
			if _, err := writeInitial(ws, wl, proto.Versions); err != nil {
				t.Fatal(err)
			}
			l, err := openLegacy(ctx, url, wl, sinks, proto, false)
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			var oc OrderCheck
			if proto.Order == OrderPrepared {
				// Long enough for the old protocol to go out of order
				// dozens of times (see below).
				if err := l.run(ctx, 4*time.Second, wl.Streams, 0, nil); err != nil {
					t.Fatal(err)
				}
				if oc, err = checkOrder(m.dir); err != nil {
					t.Fatal(err)
				}
				if oc.OutOfOrder != 0 || oc.Versioned == 0 {
					t.Fatalf("prepared protocol: %d of %d transaction frames out of the database's commit order (%d versioned changes)", oc.OutOfOrder, oc.Frames, oc.Versioned)
				}
			} else {
				// Until the first frame out of order: a few seconds.
				for deadline := time.Now().Add(2 * time.Minute); oc.OutOfOrder == 0; {
					if time.Now().After(deadline) {
						t.Fatalf("after-commit protocol: no frame out of commit order in %d transactions over 2 minutes", oc.Frames)
					}
					if err := l.run(ctx, 2*time.Second, wl.Streams, 0, nil); err != nil {
						t.Fatal(err)
					}
					if oc, err = checkOrder(m.dir); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, w := range ws {
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			fc, err := compareState(ctx, conn, readTruth(t, m.dir))
			if err != nil {
				t.Fatal(err)
			}
			if proto.Order == OrderPrepared && fc.Differ != 0 {
				t.Fatalf("prepared protocol: the change files' rows against the database: %d of %d differ: %v", fc.Differ, fc.Rows, fc.Examples)
			}
			if err := m.start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.startReceiver(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.settle(ctx, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			sc, err := compareState(ctx, conn, m.rcv.Store())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d transactions, %d frames out of commit order; files: %d of %d rows differ; receiver: %d of %d rows differ %v",
				proto, l.txs.Load(), oc.OutOfOrder, fc.Differ, fc.Rows, sc.Differ, sc.Rows, sc.Examples)
			if proto.Order == OrderPrepared && (sc.Differ != 0 || sc.Rows == 0) {
				t.Fatalf("prepared protocol: receiver against the database: %d of %d rows differ: %v", sc.Differ, sc.Rows, sc.Examples)
			}
		})
	}
}

// TestKeyOrderIsTheStores: the state check's ORDER BY sorts change-file
// keys as the receiver's store scans them (store.CompareKeys), for single
// and composite keys that are, or only look like, integers.
func TestKeyOrderIsTheStores(t *testing.T) {
	ctx := context.Background()
	c := startTestCluster(t, ctx)
	conn := connect(t, ctx, c.URL("postgres"))
	if _, err := conn.Exec(ctx, `CREATE TABLE keyorder (a text NOT NULL, b bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	as := []string{"0", "1", "2", "9", "10", "99", "100", "1207", "00", "007", "-1", "1.5", "a", "A", "b10", "b9", "Z", "é", "12345678901234567890"}
	for _, a := range as {
		for _, b := range []int64{1, 9, 10, -3} {
			if _, err := conn.Exec(ctx, `INSERT INTO keyorder VALUES ($1, $2)`, a, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, cols := range [][]string{{"a"}, {"b"}, {"a", "b"}} {
		rows, err := conn.Query(ctx, "SELECT "+strings.Join(cols, "::text || '/' || ")+"::text AS k FROM keyorder ORDER BY "+keyOrderOf(cols))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			got = append(got, k)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(got)
		slices.SortFunc(want, func(a, b string) int { return store.CompareKeys([]byte(a), []byte(b)) })
		if !slices.Equal(got, want) {
			t.Fatalf("key columns %v: the database orders %q, the store %q", cols, got, want)
		}
	}
}
