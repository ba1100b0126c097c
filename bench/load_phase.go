package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
	"github.com/jackc/pgx/v5"
)

// The initial-load phase measures the initial load: `ferry load` (package
// shipper/load) sending a PostgreSQL table's existing rows into the stream,
// and receivers applying them. It runs once per bench run, after the modes,
// on a table of its own (loadTable) in a database of its own, each step on
// a fresh embedded JetStream server and a fresh receiver, so that no step
// inherits another's stream or store:
//
//   - stream: the loader (load.Run in this process) into JetStream, no
//     receiver: the loader's rate, bytes and compression;
//   - ingest: a receiver started on the stream that step filled, until it
//     has applied every row: the receiver's ingest rate alone;
//   - end to end: a running receiver, then the load, until the receiver has
//     applied every row;
//   - process: a loader process of its own (Config.LoaderCommand, `ferry
//     load` for `ferry bench`) into a fresh stream: its rate from start to
//     exit and its peak RSS, which in-process figures cannot tell apart
//     from the bench's own memory.
//
// After the ingest and end-to-end steps the receiver's rows are compared
// with the table's, row by row (compareTables); any difference fails the
// run.

// loadDB is the initial-load phase's database.
const loadDB = "ferry_bench_load"

// loadTable is the initial-load phase's table (and BenchmarkLoad's): rows
// of about 200 bytes as JSON images, a bigint key, two short texts, two
// numbers and 96 characters of payload.
var loadTable = &workload.Table{Name: "bench_rows", KeyLen: 1, Columns: []workload.Column{
	{Name: "id", Type: workload.Int}, {Name: "name", Type: workload.Text}, {Name: "city", Type: workload.Text},
	{Name: "qty", Type: workload.Int}, {Name: "balance_cents", Type: workload.Int}, {Name: "payload", Type: workload.Text},
}}

// createLoadTable creates loadTable with n rows in conn's database.
func createLoadTable(ctx context.Context, conn *pgx.Conn, n int) error {
	for _, q := range []string{
		loadTable.CreateSQL(),
		// In loadTable's column order.
		fmt.Sprintf(`INSERT INTO %s SELECT i, 'customer '||i, 'city '||(i%%100), i%%1000, i*7,
			repeat(md5(i::text), 3) FROM generate_series(1, %d) i`, loadTable.Name, n),
		"VACUUM ANALYZE " + loadTable.Name,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("bench: creating the load table %s (%d rows): %s: %w", loadTable.Name, n, strings.Fields(q)[0], err)
		}
	}
	return nil
}

// loadPhase is one run of the initial-load phase.
type loadPhase struct {
	cfg      Config
	codec    wire.Codec
	url      string    // of loadDB
	conn     *pgx.Conn // to loadDB, for the state checks
	pgPid    int
	progress func(string, ...any)
	res      *InitialLoad
}

// runLoadPhase runs the initial-load phase on srv. Its failure is the
// result's Error; a receiver whose rows differ from the table's is in its
// StateCheck.
func runLoadPhase(ctx context.Context, cfg Config, srv *pgServer, admin *pgx.Conn, progress func(string, ...any)) *InitialLoad {
	codec, _ := wire.ParseCodec(cfg.Codec) // validated
	p := &loadPhase{cfg: cfg, codec: codec, url: srv.urlFor(loadDB), pgPid: srv.pid, progress: progress,
		res: &InitialLoad{Rows: int64(cfg.LoadRows), Codec: cfg.Codec, StateCheck: &StateCheck{}}}
	if err := p.run(ctx, admin); err != nil {
		p.res.Error = err.Error()
		progress("initial load failed: %v", err)
	}
	return p.res
}

func (p *loadPhase) run(ctx context.Context, admin *pgx.Conn) error {
	for _, q := range []string{"DROP DATABASE IF EXISTS " + loadDB + " WITH (FORCE)", "CREATE DATABASE " + loadDB} {
		if _, err := admin.Exec(ctx, q); err != nil {
			return fmt.Errorf("bench: initial load: %s: %w", q, err)
		}
	}
	defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+loadDB+" WITH (FORCE)")
	conn, err := pgx.Connect(ctx, p.url)
	if err != nil {
		return fmt.Errorf("bench: initial load: connecting to %s: %w", redact(p.url), err)
	}
	defer conn.Close(context.Background())
	p.conn = conn
	n := p.cfg.LoadRows
	p.progress("initial load: creating %s with %d rows", loadTable.Name, n)
	t0 := time.Now()
	if err := createLoadTable(ctx, conn, n); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, "SELECT pg_total_relation_size($1)", loadTable.Name).Scan(&p.res.TableBytes); err != nil {
		return fmt.Errorf("bench: initial load: the size of %s: %w", loadTable.Name, err)
	}
	p.progress("initial load: %s created in %v (%d MiB in PostgreSQL)", loadTable.Name, time.Since(t0).Round(time.Millisecond), p.res.TableBytes>>20)
	if err := p.streamAndIngest(ctx); err != nil {
		return err
	}
	if err := p.endToEnd(ctx); err != nil {
		return err
	}
	return p.process(ctx)
}

// timed runs fn as a step over rows: its wall time, this process's CPU
// and PostgreSQL's.
func (p *loadPhase) timed(rows int64, fn func() error) (LoadStep, error) {
	cpu0, db0 := processCPU(), p.dbCPU()
	t0 := time.Now()
	err := fn()
	s := LoadStep{Seconds: time.Since(t0).Seconds(), Rows: rows,
		ProcCPU: (processCPU() - cpu0).Seconds(), DBCPU: (p.dbCPU() - db0).Seconds()}
	if s.Seconds > 0 {
		s.RowsPerSec = float64(rows) / s.Seconds
	}
	return s, err
}

func (p *loadPhase) dbCPU() time.Duration {
	if p.pgPid == 0 {
		return 0
	}
	d, _ := pg.ServerCPU(p.pgPid)
	return d
}

// loadOnce loads the table into st, in this process, and checks that the
// loader says it sent every row.
func (p *loadPhase) loadOnce(ctx context.Context, st load.Stream) error {
	res, err := load.Run(ctx, st, load.Input{PG: p.url}, load.Table{Name: loadTable.Name}, load.Config{}.WithCodec(p.codec))
	if err != nil {
		return fmt.Errorf("bench: initial load: loading %s: %w", loadTable.Name, err)
	}
	if res.Rows != p.res.Rows {
		return fmt.Errorf("bench: initial load: the loader sent %d rows of %s, the table has %d", res.Rows, loadTable.Name, p.res.Rows)
	}
	return nil
}

// streamAndIngest runs the stream step, then the ingest step on the stream
// it filled.
func (p *loadPhase) streamAndIngest(ctx context.Context) error {
	br, err := startBroker()
	if err != nil {
		return err
	}
	defer br.stop()
	nc, err := br.connect("ferry-bench-loader")
	if err != nil {
		return err
	}
	defer nc.Close()
	st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
	if err != nil {
		return fmt.Errorf("bench: initial load: opening the stream: %w", err)
	}
	r := p.res
	if r.Stream, err = p.timed(r.Rows, func() error { return p.loadOnce(ctx, st) }); err != nil {
		return err
	}
	ws, err := countStream(ctx, nc, fileStream)
	if err != nil {
		return fmt.Errorf("bench: initial load: reading the stream back: %w", err)
	}
	r.Messages, r.WireBytes, r.RawBytes = ws.Messages, ws.Bytes, ws.Raw
	if ws.Bytes > 0 {
		r.Compression = float64(ws.Raw) / float64(ws.Bytes)
	}
	r.RowBytes = float64(ws.Raw) / float64(max(1, r.Rows))
	r.Stream.RawMBPerSec = float64(ws.Raw) / 1e6 / r.Stream.Seconds
	p.progress("initial load: stream: %d rows into JetStream in %.2f s: %.0f rows/s, %.1f MB/s raw, compression %.2f (%s)",
		r.Rows, r.Stream.Seconds, r.Stream.RowsPerSec, r.Stream.RawMBPerSec, r.Compression, r.Codec)

	m, err := newFilePipeline(br, p.codec)
	if err != nil {
		return err
	}
	defer m.close()
	var ls api.LoadStatus
	r.Ingest, err = p.timed(r.Rows, func() error {
		if err := m.startReceiver(ctx); err != nil {
			return err
		}
		var err error
		ls, err = p.waitApplied(ctx, m)
		return err
	})
	if err != nil {
		return err
	}
	r.Ingest.RawMBPerSec = float64(r.RawBytes) / 1e6 / r.Ingest.Seconds
	r.IngestSSTRows = ls.RowsIngested
	p.progress("initial load: ingest: a fresh receiver applied the %d rows in %.2f s: %.0f rows/s (%d as sstables)",
		r.Rows, r.Ingest.Seconds, r.Ingest.RowsPerSec, ls.RowsIngested)
	return p.check(ctx, m, "ingest")
}

// endToEnd runs the end-to-end step: a receiver running on a fresh stream,
// then the load, until the receiver has applied every row.
func (p *loadPhase) endToEnd(ctx context.Context) error {
	br, err := startBroker()
	if err != nil {
		return err
	}
	defer br.stop()
	m, err := newFilePipeline(br, p.codec)
	if err != nil {
		return err
	}
	defer m.close()
	// Started before the clock, as a deployed receiver runs before the
	// load; it waits for the stream the loader creates.
	if err := m.startReceiver(ctx); err != nil {
		return err
	}
	nc, err := br.connect("ferry-bench-loader")
	if err != nil {
		return err
	}
	defer nc.Close()
	r := p.res
	var ls api.LoadStatus
	r.EndToEnd, err = p.timed(r.Rows, func() error {
		st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
		if err != nil {
			return fmt.Errorf("bench: initial load: opening the stream: %w", err)
		}
		if err := p.loadOnce(ctx, st); err != nil {
			return err
		}
		ls, err = p.waitApplied(ctx, m)
		return err
	})
	if err != nil {
		return err
	}
	r.EndToEnd.RawMBPerSec = float64(r.RawBytes) / 1e6 / r.EndToEnd.Seconds
	r.EndToEndSSTRows = ls.RowsIngested
	p.progress("initial load: end to end: PostgreSQL to a receiver holding the %d rows in %.2f s: %.0f rows/s (%d as sstables)",
		r.Rows, r.EndToEnd.Seconds, r.EndToEnd.RowsPerSec, ls.RowsIngested)
	return p.check(ctx, m, "end to end")
}

// waitApplied waits until m's receiver reports the load of the table done
// and returns its status; the receiver must have applied every row (the
// table holds nothing else that could make a load row obsolete).
func (p *loadPhase) waitApplied(ctx context.Context, m *fileMode) (api.LoadStatus, error) {
	var ls api.LoadStatus
	err := waitFor(ctx, p.cfg.DrainTimeout, "the receiver to apply the load of "+loadTable.Name, func() (bool, error) {
		if err := m.failed(); err != nil {
			return false, err
		}
		for _, s := range m.rcv.Status().Loads {
			if s.Table != loadTable.Name {
				continue
			}
			switch s.State {
			case "done":
				ls = s
				return true, nil
			case "failed":
				return false, fmt.Errorf("bench: initial load: the receiver's load of %s failed: %s", s.Table, s.Error)
			}
		}
		return false, nil
	})
	if err != nil {
		return ls, err
	}
	if ls.RowsApplied != uint64(p.res.Rows) {
		return ls, fmt.Errorf("bench: initial load: the receiver applied %d rows of %s (%d dropped), want %d", ls.RowsApplied, loadTable.Name, ls.RowsDropped, p.res.Rows)
	}
	return ls, nil
}

// check compares m's receiver's rows with the table's.
func (p *loadPhase) check(ctx context.Context, m *fileMode, step string) error {
	sc, err := compareTables(ctx, p.conn, m.rcv.Store(), []*workload.Table{loadTable})
	if err != nil {
		return err
	}
	p.res.StateCheck.add(sc)
	p.progress("initial load: %s: state check: %d of %d rows differ", step, sc.Differ, sc.Rows)
	return nil
}

// process runs the process step: Config.LoaderCommand with `ferry load`'s
// flags, into a fresh stream on a broker listening on loopback, sampling
// the process's peak RSS (VmHWM) until it exits.
func (p *loadPhase) process(ctx context.Context) error {
	if len(p.cfg.LoaderCommand) == 0 {
		p.progress("initial load: no loader command: the loader process's RSS is not measured")
		return nil
	}
	br, err := startListeningBroker()
	if err != nil {
		return err
	}
	defer br.stop()
	args := slices.Concat(p.cfg.LoaderCommand[1:], []string{"--pg", p.url, "--nats", br.clientURL(),
		"--table", loadTable.Name, "--codec", p.cfg.Codec, "--progress", "none"})
	cmd := exec.CommandContext(ctx, p.cfg.LoaderCommand[0], args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	db0 := p.dbCPU()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: initial load: starting the loader process %s: %w", p.cfg.LoaderCommand[0], err)
	}
	// The kernel keeps VmHWM, the high-water mark, while the process
	// lives: sampling it misses only growth in the last interval before
	// exit. wait4's ru_maxrss cannot replace it: a child forked with
	// vfork, as os/exec does, counts this (much larger) process's pages.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }() // owned here: received below whatever happens
	var peak int64
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var werr error
wait:
	for {
		if v, err := vmHWM(cmd.Process.Pid); err == nil {
			peak = max(peak, v)
		}
		select {
		case werr = <-done:
			break wait
		case <-tick.C:
		}
	}
	s := LoadStep{Seconds: time.Since(t0).Seconds(), Rows: p.res.Rows, DBCPU: (p.dbCPU() - db0).Seconds()}
	if werr != nil {
		return fmt.Errorf("bench: initial load: the loader process %s: %w: %s", strings.Join(cmd.Args, " "), werr, lastLines(out.String(), 5))
	}
	if peak == 0 {
		return fmt.Errorf("bench: initial load: no VmHWM read from /proc/%d/status of the loader process", cmd.Process.Pid)
	}
	s.RowsPerSec = float64(s.Rows) / s.Seconds
	s.RawMBPerSec = float64(p.res.RawBytes) / 1e6 / s.Seconds
	s.ProcCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	p.res.Process, p.res.LoaderPeakRSS = &s, peak
	p.progress("initial load: loader process: %d rows in %.2f s: %.0f rows/s, peak RSS %.1f MiB", s.Rows, s.Seconds, s.RowsPerSec, float64(peak)/(1<<20))
	return nil
}

// vmHWM returns the peak RSS (VmHWM) of process pid in bytes.
func vmHWM(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
