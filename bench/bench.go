// Package bench measures Ferry against change data capture on the same
// legacy workload, with PostgreSQL as the legacy database. It is a library:
// a Config and Run; `ferry bench` binds the flags and prints the report
// (package bench/report).
//
// Every mode runs on a fresh copy (CREATE DATABASE … TEMPLATE) of the same
// initial data, with the same workload streams and server settings:
//
//   - none: the legacy alone, the baseline;
//   - cdc-table: SQL Server-style companion tables filled by triggers in the
//     legacy's transactions, a poller publishing to JetStream and a cleanup
//     job (cdc_table.go);
//   - cdc-log: logical decoding (wal2json through pg_recvlogical) relayed to
//     JetStream, as Debezium does (cdc_log.go);
//   - file: the legacy writes each transaction to change files with
//     format.Writer, appended before its COMMIT and its outcome recorded
//     after (or, to compare, right after its COMMIT: WriterProtocol); the
//     shipper and receiver libraries carry them through an embedded
//     JetStream (file_mode.go).
//
// The workload has contention: hot stock rows that every worker updates.
// After every phase with a receiver the file mode compares the receiver's
// rows with the database's, row by row (statecheck.go), and a run with any
// difference fails.
//
// Each mode runs four timed phases: load (legacy at full speed, capture on,
// shipping off: the cost of capture alone), drain (shipping the backlog
// with the legacy idle: maximum shipping throughput and the shipper's CPU,
// then for the file mode the receiver applying it), concurrent (legacy at
// full speed with shipping running on the same host) and paced (legacy at a
// fixed rate: end-to-end latency).
//
// After the modes, unless Config.LoadRows is 0, the initial-load phase
// (load_phase.go) measures `ferry load` (package shipper/load) on a table
// of LoadRows ~200-byte rows: PostgreSQL → JetStream (the loader's rows/s,
// MB/s, compression), a fresh receiver's ingest of that filled stream,
// PostgreSQL → a running receiver end to end, and a loader process's peak
// RSS; the receivers' rows are compared with the table's, row by row.
// (Not to be confused with the modes' "load" phase, the legacy's load.)
package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/jackc/pgx/v5"
)

// Mode is one way of getting the legacy's changes out.
type Mode string

// Modes.
const (
	ModeNone     Mode = "none"
	ModeCDCTable Mode = "cdc-table"
	ModeCDCLog   Mode = "cdc-log"
	ModeFile     Mode = "file"
)

// AllModes returns every mode in the order a run uses.
func AllModes() []Mode { return []Mode{ModeNone, ModeCDCTable, ModeCDCLog, ModeFile} }

// ParseModes parses a comma-separated list of modes; "all" means AllModes.
func ParseModes(s string) ([]Mode, error) {
	if s == "" || s == "all" {
		return AllModes(), nil
	}
	var out []Mode
	seen := map[Mode]bool{}
	for _, p := range strings.Split(s, ",") {
		m := Mode(strings.TrimSpace(p))
		switch m {
		case ModeNone, ModeCDCTable, ModeCDCLog, ModeFile:
		default:
			return nil, fmt.Errorf("bench: unknown mode %q (want none, cdc-table, cdc-log, file or all)", p)
		}
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out, nil
}

// Config configures a run. Zero fields take the defaults noted.
type Config struct {
	// Profile names the run in the report ("quick", "full").
	Profile string
	// Note is a remark printed with the results (where and how it ran).
	Note string
	// PGURL is an existing PostgreSQL server's URL (a superuser that may
	// create databases and replication slots, wal_level=logical); empty
	// starts a throwaway cluster.
	PGURL string
	// PGBinDir holds the PostgreSQL binaries; empty finds them.
	PGBinDir string
	// Durability of the legacy's commits, shared by every mode: sync
	// (default; the change-file writer then uses SyncAlways) or async
	// (writer SyncInterval at PostgreSQL's wal_writer_delay, 100 ms).
	Durability pg.Durability
	// Modes to run; default AllModes. A run without none reports no
	// overhead.
	Modes []Mode
	// Workload; its Rate is ignored (phases set it) and its Streams is
	// max(Workers, PacedWorkers).
	Workload workload.Config
	// Workers is the number of legacy workers (connections, one workload
	// stream each) in the load and concurrent phases; default 4.
	Workers int
	// PacedWorkers is the number of workers of the paced phase, enough
	// for the database to reach LatencyRate with commits that each wait
	// for an fsync; default 16.
	PacedWorkers int
	// PhaseDuration of the load, concurrent and paced phases; default 20 s.
	PhaseDuration time.Duration
	// Rounds splits the load phase into slices that visit the modes in
	// turn; default one per 2 s of PhaseDuration, 3 to 10.
	Rounds int
	// LatencyRate is the paced phase's rate in changes/s; default 10,000.
	LatencyRate float64
	// DrainTimeout bounds a wait for shipping to catch up; default 2 min.
	DrainTimeout time.Duration
	// PollInterval of the cdc-table poller; default 10 ms.
	PollInterval time.Duration
	// CleanupInterval of the cdc-table cleanup job; default 1 s.
	CleanupInterval time.Duration
	// FileBefore writes before images to the change files too.
	FileBefore bool
	// WriterSync overrides the change-file writer's sync policy ("none",
	// "interval" at 100 ms, "always"); empty matches Durability (see
	// writerSync), which is the only setting with equal durability.
	WriterSync string
	// Codec compresses the file mode's messages: "zstd" (default), "s2"
	// or "none".
	Codec string
	// WriterProtocol lists the writer protocols of the file mode,
	// comma-separated (ParseWriterProtocols; default
	// DefaultWriterProtocols): each runs as a mode of its own, the first
	// named "file", the others "file-" + the protocol.
	WriterProtocol string
	// Sources is the number of app servers of the file mode, each with its
	// own change-file writer, source and shipper, writing the same tables
	// (worker i writes with app server i % Sources); default 1. Without
	// row versions (+versions) their writes to the hot rows reach the
	// receiver in an undefined order.
	Sources int
	// HotRows is the number of hot stock rows every worker updates
	// (workload.Config.HotRows; default DefaultHotRows, -1 for none), HotPct the share
	// of transactions that update one (default 50).
	HotRows, HotPct int
	// LoadRows is the size of the initial-load phase's table (rows of
	// ~200 bytes); 0 skips the phase. `ferry bench` runs it by default.
	LoadRows int
	// LoaderCommand runs a loader process in the initial-load phase, to
	// measure
	// its peak RSS: the command and its first arguments, to which the
	// phase appends `ferry load`'s flags (--pg, --nats, --table, --codec,
	// --progress). `ferry bench` runs itself: {"/path/to/ferry", "load"}.
	// Empty: that step is skipped.
	LoaderCommand []string
	// Progress receives a line per phase and per second; nil: none.
	Progress io.Writer
	// Logger for the components; nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Durability == "" {
		c.Durability = pg.Sync
	}
	if len(c.Modes) == 0 {
		c.Modes = AllModes()
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.PacedWorkers == 0 {
		c.PacedWorkers = 16
	}
	c.Workload.Streams = max(c.Workers, c.PacedWorkers)
	switch {
	case c.HotRows == 0:
		c.HotRows = DefaultHotRows
	case c.HotRows < 0:
		c.HotRows = 0
	}
	c.Workload.HotRows, c.Workload.HotPct = c.HotRows, c.HotPct
	c.Workload = c.Workload.WithDefaults()
	if c.WriterProtocol == "" {
		c.WriterProtocol = DefaultWriterProtocols
	}
	c.Workload.Rate = 0
	if c.PhaseDuration == 0 {
		c.PhaseDuration = 20 * time.Second
	}
	if c.Codec == "" {
		c.Codec = wire.CodecZstd.String()
	}
	if c.Rounds == 0 {
		c.Rounds = min(10, max(3, int(c.PhaseDuration/(2*time.Second))))
	}
	if c.LatencyRate == 0 {
		c.LatencyRate = 10000
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 2 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = 10 * time.Millisecond
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func (c Config) validate() error {
	if _, err := pg.ParseDurability(string(c.Durability)); err != nil {
		return err
	}
	if _, err := wire.ParseCodec(c.Codec); err != nil {
		return err
	}
	if _, err := ParseWriterProtocols(c.WriterProtocol); err != nil {
		return err
	}
	if c.WriterSync != "" {
		if _, err := format.ParseSyncPolicy(c.WriterSync); err != nil {
			return err
		}
	}
	if err := c.Workload.Validate(); err != nil {
		return err
	}
	switch {
	case c.Workers < 1 || c.PacedWorkers < 1:
		return fmt.Errorf("bench: %d workers, %d paced workers: want at least 1", c.Workers, c.PacedWorkers)
	case c.PhaseDuration < 100*time.Millisecond:
		return fmt.Errorf("bench: phase duration %v below 100ms", c.PhaseDuration)
	case c.Rounds < 1 || c.PhaseDuration/time.Duration(c.Rounds) < 100*time.Millisecond:
		return fmt.Errorf("bench: %d rounds of a %v phase: want slices of at least 100ms", c.Rounds, c.PhaseDuration)
	case c.LoadRows < 0:
		return fmt.Errorf("bench: %d load rows: want 0 (no initial-load phase) or more", c.LoadRows)
	case c.Sources < 0 || c.Sources > 64:
		return fmt.Errorf("bench: %d app server sources (want 1-64)", c.Sources)
	case c.LatencyRate < 0:
		return fmt.Errorf("bench: negative latency rate %v", c.LatencyRate)
	case c.PollInterval < time.Millisecond || c.CleanupInterval < time.Millisecond:
		return fmt.Errorf("bench: poll interval %v / cleanup interval %v below 1ms", c.PollInterval, c.CleanupInterval)
	}
	return nil
}

// DefaultHotRows is the number of hot stock rows of a run.
const DefaultHotRows = 20

// modeSpec is one mode of a run as it is named in the results.
type modeSpec struct {
	mode  Mode
	name  string
	proto WriterProtocol
}

// modeSpecs expands the file mode into one mode per writer protocol.
func (c Config) modeSpecs() []modeSpec {
	protos, _ := ParseWriterProtocols(c.WriterProtocol) // validated
	var out []modeSpec
	for _, m := range c.Modes {
		if m != ModeFile {
			out = append(out, modeSpec{mode: m, name: string(m)})
			continue
		}
		for i, p := range protos {
			out = append(out, modeSpec{mode: m, name: fileModeName(i, p), proto: p})
		}
	}
	return out
}

// server is the PostgreSQL server a run uses.
type pgServer struct {
	cluster *pg.Cluster // nil with --pg
	admin   string      // URL of the postgres database
	urlFor  func(db string) string
	pid     int // postmaster, 0 if not on this host
	binDir  string
	port    int
}

// Run runs every configured mode, then the initial-load phase, and returns
// the figures. A mode or an initial-load phase that fails is reported with
// its error (ModeResult.Error, InitialLoad.Error) and the run goes on; Run
// fails when no mode could be measured, and when a receiver's rows differ
// from the database's.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	res := &Results{Profile: cfg.Profile, Note: cfg.Note, Started: time.Now().UTC()}
	load0 := loadAvg()
	progress := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "bench: "+format+"\n", args...)
	}
	srv, err := startServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if srv.cluster != nil {
		defer srv.cluster.Stop()
		progress("PostgreSQL cluster in %s on 127.0.0.1:%d (durability %s)", srv.cluster.DataDir(), srv.port, cfg.Durability)
	}
	admin, err := pgx.Connect(ctx, srv.admin)
	if err != nil {
		return nil, fmt.Errorf("bench: connecting to %s: %w", redact(srv.admin), err)
	}
	defer admin.Close(context.Background())
	res.Machine = machine(ctx, admin)
	res.Machine.LoadAvgStart = load0
	res.Settings = settings(cfg)
	base := "ferry_bench_base"
	// Leftovers of an interrupted run on a --pg server: its slot (which
	// would keep WAL forever and block dropping its database), then its
	// databases.
	if _, err := admin.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slotName); err != nil {
		return nil, fmt.Errorf("bench: dropping the old replication slot %s: %w", slotName, err)
	}
	specs := cfg.modeSpecs()
	for _, db := range append([]string{base}, modeDBs(specs)...) {
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			return nil, fmt.Errorf("bench: dropping old database %s: %w", db, err)
		}
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+base); err != nil {
		return nil, fmt.Errorf("bench: creating %s: %w", base, err)
	}
	defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+base+" WITH (FORCE)")
	progress("loading the initial data (%d customers, %d products, %d orders)", cfg.Workload.Customers, cfg.Workload.Products, cfg.Workload.Orders)
	if err := loadInitial(ctx, srv.urlFor(base), cfg.Workload); err != nil {
		return nil, err
	}
	start := time.Now()
	runs := make([]*modeRun, 0, len(specs))
	defer func() {
		for _, r := range runs {
			r.close()
		}
	}()
	for _, sp := range specs {
		runs = append(runs, openMode(ctx, cfg, srv, admin, base, sp.mode, sp.name, sp.proto, progress))
	}
	// The load phase, capture on and shipping off in every mode, runs in
	// rounds that visit the modes in turn, so that whatever else the host
	// is doing weighs on every mode alike.
	slice := cfg.PhaseDuration / time.Duration(cfg.Rounds)
	progress("load phase: %v per mode at full speed with %d workers, shipping off, in %d rounds of %v", cfg.PhaseDuration, cfg.Workers, cfg.Rounds, slice)
	for round := 0; round < cfg.Rounds && ctx.Err() == nil; round++ {
		for i := range runs {
			r := runs[(i+round)%len(runs)]
			r.legacySlice(ctx, &r.mr.Load, fmt.Sprintf("load %d/%d", round+1, cfg.Rounds), slice, cfg.Workers, 0, false, nil)
		}
	}
	for _, r := range runs {
		if r.ok() {
			progress("%s: load: %.0f tx/s, %.0f changes/s", r.name, r.mr.Load.TxPerSec, r.mr.Load.ChangesPerSec)
			if st := r.mr.Load.TxStages; st != nil {
				progress("%s: load: µs per transaction: exec %.0f + append %.0f + commit %.0f + after %.0f = %.0f", r.name, st.Exec, st.Append, st.Commit, st.After, st.Total())
			}
		}
	}
	// Shipping, one mode at a time, then that mode is closed so that its
	// shipping does not run beside the next mode's.
	var baseRun *modeRun
	for _, r := range runs {
		if r.mode == ModeNone {
			baseRun = r
		}
	}
	for _, r := range runs {
		if ctx.Err() != nil {
			break
		}
		if r == baseRun {
			continue // kept open: the baseline of the concurrent phases
		}
		r.drain(ctx)
		r.shipping(ctx, baseRun)
		r.close()
	}
	for _, r := range runs {
		res.Modes = append(res.Modes, r.mr)
	}
	// The initial load after the modes, so that its table and its receivers'
	// compactions weigh on none of them.
	if cfg.LoadRows > 0 && ctx.Err() == nil {
		res.InitialLoad = runLoadPhase(ctx, cfg, srv, admin, progress)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Machine.LoadAvgEnd = loadAvg()
	derive(res.Modes)
	res.Notes = notes(cfg)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	ok := false
	var errs []error
	for _, m := range res.Modes {
		if m.Error == "" {
			ok = true
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", m.Mode, m.Error))
		}
	}
	if !ok {
		return res, errors.Join(errs...)
	}
	// The receiver must hold what the database holds: anything else fails
	// the run (after the figures are in).
	var differ []error
	for _, m := range res.Modes {
		if c := m.StateCheck; c != nil && c.Differ > 0 {
			differ = append(differ, fmt.Errorf("%s: %d of %d rows differ from the database's (e.g. %s)", m.Mode, c.Differ, c.Rows, strings.Join(c.Examples, "; ")))
		}
	}
	if l := res.InitialLoad; l != nil && l.StateCheck != nil && l.StateCheck.Differ > 0 {
		c := l.StateCheck
		differ = append(differ, fmt.Errorf("initial load: %d of %d rows differ from the table's (e.g. %s)", c.Differ, c.Rows, strings.Join(c.Examples, "; ")))
	}
	if len(differ) > 0 {
		return res, fmt.Errorf("bench: the receiver's state is not the database's: %w", errors.Join(differ...))
	}
	return res, nil
}

func modeDBs(specs []modeSpec) []string {
	var out []string
	for _, sp := range specs {
		out = append(out, dbName(sp.name))
	}
	return out
}

func dbName(name string) string {
	return "ferry_bench_" + strings.NewReplacer("-", "_", "+", "_").Replace(name)
}

func startServer(ctx context.Context, cfg Config) (*pgServer, error) {
	if cfg.PGURL == "" {
		c, err := pg.StartCluster(ctx, pg.ClusterConfig{BinDir: cfg.PGBinDir, Durability: cfg.Durability})
		if err != nil {
			return nil, err
		}
		return &pgServer{cluster: c, admin: c.URL("postgres"), urlFor: c.URL, pid: c.Pid(), binDir: c.BinDir(), port: c.Port()}, nil
	}
	pcfg, err := pgx.ParseConfig(cfg.PGURL)
	if err != nil {
		return nil, fmt.Errorf("bench: --pg %s: %w", redact(cfg.PGURL), err)
	}
	s := &pgServer{admin: cfg.PGURL, port: int(pcfg.Port), binDir: cfg.PGBinDir}
	s.urlFor = func(db string) string { return withDatabase(cfg.PGURL, db) }
	conn, err := pgx.Connect(ctx, cfg.PGURL)
	if err != nil {
		return nil, fmt.Errorf("bench: connecting to --pg %s: %w", redact(cfg.PGURL), err)
	}
	defer conn.Close(ctx)
	var walLevel, syncCommit string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('synchronous_commit')").Scan(&walLevel, &syncCommit); err != nil {
		return nil, fmt.Errorf("bench: reading settings of --pg server: %w", err)
	}
	if walLevel != "logical" {
		return nil, fmt.Errorf("bench: --pg server has wal_level=%s; cdc-log needs logical (ALTER SYSTEM SET wal_level = logical, then restart it)", walLevel)
	}
	// The server's CPU is measurable only on this host: the parent of our
	// backend is the postmaster.
	if ppid, err := pg.ParentPid(int(conn.PgConn().PID())); err == nil {
		s.pid = ppid
	}
	if s.binDir == "" {
		if d, err := pg.FindBinDir(); err == nil {
			s.binDir = d
		}
	}
	return s, nil
}

// withDatabase returns the connection string conn with its database set to
// db, for URLs (postgres://…/db) and key=value strings alike.
func withDatabase(conn, db string) string {
	if u, err := url.Parse(conn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		return u.String()
	}
	return conn + " dbname=" + db
}

// redact hides a URL's password.
func redact(url string) string {
	if c, err := pgx.ParseConfig(url); err == nil && c.Password != "" {
		return strings.Replace(url, c.Password, "xxxxx", 1)
	}
	return url
}

func settings(cfg Config) Settings {
	w := cfg.Workload
	s := Settings{
		Streams: cfg.Workers, PacedStreams: cfg.PacedWorkers, TxSize: w.TxSize, RowSize: w.RowSize, Seed: w.Seed,
		Mix:          fmt.Sprintf("%d/%d/%d", w.Mix.Insert, w.Mix.Update, w.Mix.Delete),
		PhaseSeconds: cfg.PhaseDuration.Seconds(), LatencyRate: cfg.LatencyRate,
		Durability: string(cfg.Durability), WriterSync: cfg.writerSync().String(),
		FileBefore: cfg.FileBefore, Codec: cfg.Codec, WriterProtocols: cfg.WriterProtocol, HotRows: w.HotRows, HotPct: w.HotPct, PollMillis: ms(cfg.PollInterval), CleanupMillis: ms(cfg.CleanupInterval),
		ExternalPG:      cfg.PGURL != "",
		InitialRowCount: w.Customers + w.Products + w.Orders*4 + w.HotRows,
		LoadRows:        cfg.LoadRows,
	}
	return s
}

func machine(ctx context.Context, conn *pgx.Conn) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if v, err := pg.Version(ctx, conn); err == nil {
		m.Postgres = v
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = utsString(u.Sysname[:]) + " " + utsString(u.Release[:]) + " " + utsString(u.Machine[:])
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
				m.MemoryMiB = kb / 1024
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// loadAvg returns the 1-minute load average, 0 if unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func durabilityNote(cfg Config) string {
	commit := map[pg.Durability]string{pg.Sync: "on", pg.Async: "off"}[cfg.Durability]
	if cfg.writerSync() == writerSync(cfg.Durability) {
		return fmt.Sprintf("Durability %s: PostgreSQL synchronous_commit=%s; the change-file writer uses sync policy %s so that a committed transaction is exactly as durable in the files as in the database.", cfg.Durability, commit, cfg.writerSync())
	}
	return fmt.Sprintf("Durability %s: PostgreSQL synchronous_commit=%s, but the change-file writer uses sync policy %s (--writer-sync) instead of %s: the files are NOT as durable as the database (a power loss can lose up to 100 ms of committed transactions from the files).", cfg.Durability, commit, cfg.writerSync(), writerSync(cfg.Durability))
}

func notes(cfg Config) []string {
	out := []string{
		"The file mode's receiver runs only in the apply and paced phases (it belongs next to the microservice, and the CDC modes have no consumer); in the concurrent phase every mode runs only what runs on the legacy host plus the embedded JetStream server.",
		"Every mode runs on a fresh copy of the same initial data (CREATE DATABASE ... TEMPLATE) with the same deterministic workload streams and the same server settings; modes run one after the other on one host.",
		fmt.Sprintf("load: legacy at full speed, capture on, shipping off, in %d rounds that visit every mode in turn (so that other load on the host weighs on all modes alike); ± is the relative standard deviation of the rounds' tx/s.", cfg.Rounds) + " drain: shipping the load phase's backlog with the legacy idle (maximum shipping throughput). concurrent: legacy at full speed with shipping running on the same host, in rounds alternating with the none mode (shipping off), whose tx/s in the same rounds is the baseline of the concurrent overhead. paced: legacy at the fixed latency rate with shipping running.",
		"Legacy bytes per change = WAL bytes (pg_current_wal_lsn difference) + data pages written (pg_stat_bgwriter buffers_checkpoint+buffers_clean+buffers_backend, with a CHECKPOINT ending the phase) + change-file bytes, for the load phase, plus the WAL and pages that shipping wrote on the legacy database during the drain (cdc-table's cleanup deletes), divided by the load phase's changes.",
		"Legacy CPU = PostgreSQL server processes (postmaster with its reaped children's times + live children, from /proc) plus this process's CPU (getrusage) during the load phase, when only the legacy workers run in it (and, in file mode, the change-file writer). Shipper CPU = this process's CPU during the drain (poller or relay or shipper, and the embedded JetStream server in every mode) plus pg_recvlogical's; the PostgreSQL CPU spent for shipping (walsender decoding, poller queries, cleanup) is reported separately. Receiver CPU = this process during the apply phase. Live shipping CPU = all CPU per change in the concurrent phase (this process, children, PostgreSQL) less the load phase's: what shipping costs while the legacy runs, in small batches.",
		"Latency: from the moment the legacy's COMMIT returned (the legacy's worker clock) to the moment an in-process JetStream consumer received the change (every mode) or the change was readable in the receiver's store (file mode: woken by the store's commit notification, as the receiver's change feed is); matched by the version column each transaction writes, so transactions with deletes only are not sampled. The paced phase spreads the rate over more workers (see Workload) so that commits that each wait for an fsync can reach it.",
		"cdc-log's slot exists from the start, so its drain also reads (and skips) the WAL that the other modes wrote during the interleaved load rounds: its drain rate and the walsender's CPU are somewhat pessimistic.",
		"CDC modes publish one JSON message per change (like Debezium), uncompressed, without de-duplication ids; Ferry publishes compressed batches of frames with de-duplication ids. The JetStream server is embedded with the same default settings for every mode.",
		durabilityNote(cfg),
		fmt.Sprintf("Contention: %d hot stock rows (popular products) are shared by every worker; %d %% of the transactions take stock from one of them as their last statement (UPDATE … SET qty = …, rev = rev + 1 … RETURNING: the new row is the database's to compute), the other rows are each worker's own. The file mode writes the returned row.", cfg.HotRows, cfg.Workload.HotPct),
		"Writer protocols (file mode): prepared appends the transaction's frame with format.Writer.Prepare after its last statement and before COMMIT, while it holds its row locks, with the PostgreSQL txid_current() as the transaction id (so that a crashed writer's in-doubt frames are resolved with pg_xact_status); the writer's fsync runs during the COMMIT, then the outcome is recorded (Prepared.Commit). after-commit is the old way: Writer.Commit once COMMIT returned, the fsync after the database's. +versions puts the stock rows' rev column in format.Change.Version (a row version the receiver compares); without it the files' order alone decides.",
		"State check: the file mode's change files start with the initial rows (insert transactions written before the load phase, counted in the drain and apply phases); after the apply and paced phases, once the receiver has applied the files up to their end, every row of every table in the database is compared with the receiver's (key, and the whole row as JSON); rows missing from the receiver, rows only it has and rows that differ count as differing, and any fails the run. Order check: in the change files, a transaction frame is out of the database's commit order when it writes a stock row with a lower rev than an earlier frame of the same source wrote.",
		"The host has few cores shared with other work: figures are noisy; compare modes within one run.",
	}
	if cfg.LoadRows > 0 {
		out = append(out, fmt.Sprintf("Initial load (package shipper/load as `ferry load` runs it): a table of %d rows of ~200 bytes (bench_rows: bigint key, two short texts, two numbers, 96 characters of payload) in a database of its own, after the modes; each step on a fresh embedded JetStream server and a fresh receiver, codec %s. stream: the loader in this process into JetStream, no receiver (rows/s; MB/s of the messages' uncompressed bodies; compression = raw / wire bytes). ingest: a fresh receiver started on that filled stream, timed from its start to the receiver's load status done (the receiver's ingest rate alone). end to end: a receiver running, then the load, until the receiver's load status is done. loader process: a `ferry load` process into a fresh stream over loopback, timed from its start to its exit (process start-up included); peak RSS = its VmHWM sampled from /proc every 10 ms (the kernel's high-water mark, so only growth in the last 10 ms before exit could be missed; wait4's ru_maxrss would count this process's pages, vfork). After the ingest and end-to-end steps every row of the table is compared with the receiver's (key and JSON image); any difference fails the run. The payload repeats one md5 three times: the compression is kinder than real rows would get. PostgreSQL, JetStream, loader and receiver share the host's cores.", cfg.LoadRows, cfg.Codec))
	}
	return out
}
