//go:build !lean

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/bench"
	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/report"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format/wire"
)

// benchProfile is a named set of defaults.
type benchProfile struct {
	phase                       time.Duration
	customers, products, orders int
	loadRows                    int // of the initial-load phase
}

// benchProfileFor returns the profile: quick (CI's smoke run, about a
// minute) or full (the committed results).
func benchProfileFor(quick bool) (string, benchProfile) {
	if quick {
		return "quick", benchProfile{phase: 3 * time.Second, customers: 2000, products: 2000, orders: 2000, loadRows: 100_000}
	}
	return "full", benchProfile{phase: 20 * time.Second, customers: 10000, products: 10000, orders: 10000, loadRows: 1_000_000}
}

func runBench(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry bench", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	quick := fs.Bool("quick", false, "the quick profile (3 s phases, small tables): CI's smoke run, about a minute")
	pgURL := fs.String("pg", "", "use this PostgreSQL server (superuser URL, wal_level=logical) instead of a throwaway cluster")
	pgBin := fs.String("pg-bin", "", "directory of the PostgreSQL binaries (default: found on PATH or under /usr/lib/postgresql)")
	modes := fs.String("modes", "all", "modes to run, comma-separated: none, cdc-table, cdc-log, file")
	phase := fs.Duration("duration", 0, "length of each timed phase (default 20s, 3s with --quick)")
	rate := fs.Float64("latency-rate", 10000, "changes/s of the paced phase that measures latency")
	streams := fs.Int("streams", 4, "concurrent legacy workers (database connections) in the full-speed phases")
	pacedStreams := fs.Int("paced-streams", 16, "legacy workers in the paced (latency) phase")
	txSize := fs.Int("tx-size", workload.DefaultTxSize, "changes per transaction")
	rowSize := fs.Int("row-size", workload.DefaultRowSize, "approximate row size in bytes (JSON)")
	mix := fs.String("mix", "40/50/10", "insert/update/delete weights")
	seed := fs.Uint64("seed", 1, "workload seed")
	durability := fs.String("durability", "sync", "sync (synchronous_commit=on, writer SyncAlways) or async (synchronous_commit=off, writer SyncInterval 100ms)")
	writerSyncFlag := fs.String("writer-sync", "", "override the change-file writer's sync policy (none, interval, always); default: the one as durable as the database")
	fileBefore := fs.Bool("file-before", false, "file mode also writes before images")
	codec := fs.String("codec", "zstd", "compression of the file mode's messages: zstd, s2 or none")
	writerProtocol := fs.String("writer-protocol", bench.DefaultWriterProtocols, "file mode's writer protocols, comma-separated, each run as a mode: prepared (frame appended before COMMIT, outcome after) or after-commit (the old way), optionally +versions (row versions)")
	poll := fs.Duration("cdc-poll", 10*time.Millisecond, "cdc-table poller interval")
	cleanup := fs.Duration("cdc-cleanup", time.Second, "cdc-table cleanup interval")
	drainTimeout := fs.Duration("drain-timeout", 2*time.Minute, "how long shipping may take to catch up")
	out := fs.String("out", "", "directory to write report.md, results.json, throughput.svg and latency.svg to")
	note := fs.String("note", "", "a remark to print with the results (where and how the run happened)")
	asJSON := fs.Bool("json", false, "print the results as JSON instead of the table")
	var loadRows profileInt
	fs.Var(&loadRows, "load-rows", "the initial-load phase's table holds `N` rows of ~200 bytes: ferry load from PostgreSQL into JetStream and receivers, and a ferry load process's peak RSS; 0 skips it (default 1000000, 100000 with --quick)")
	loaderBin := fs.String("loader-bin", "", "the ferry binary whose ferry load the initial-load phase runs as a process (default: this one)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (this process: legacy workers, shipping, JetStream) to this file")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry bench [--quick] [--modes none,cdc-table,cdc-log,file] [--load-rows N] [--pg URL] [--out DIR]")
		fmt.Fprintln(env.Stderr, "\nMeasures Ferry against CDC (companion tables, logical decoding) on the same legacy workload,")
		fmt.Fprintln(env.Stderr, "with a throwaway PostgreSQL cluster as the legacy database, then the initial load (ferry load)")
		fmt.Fprintln(env.Stderr, "of a table of --load-rows rows into JetStream and receivers; prints markdown tables.")
		fmt.Fprintln(env.Stderr, "Needs PostgreSQL and wal2json (Debian: apt-get install postgresql postgresql-15-wal2json).")
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	profileName, prof := benchProfileFor(*quick)
	if *phase == 0 {
		*phase = prof.phase
	}
	if !loadRows.set {
		loadRows.n = prof.loadRows
	}
	// The initial-load phase's loader process is this binary's ferry load:
	// what a user runs, measured apart from the bench's own memory.
	exe := *loaderBin
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("ferry bench: finding this binary to run ferry load from (or pass --loader-bin): %w", err)
		}
	}
	ms, err := bench.ParseModes(*modes)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	dur, err := pg.ParseDurability(*durability)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if _, err := wire.ParseCodec(*codec); err != nil {
		return &exitError{code: 2, err: err}
	}
	m, err := parseMix(*mix)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	cfg := bench.Config{
		Profile: profileName, Note: *note, PGURL: *pgURL, PGBinDir: *pgBin, Durability: dur, Modes: ms,
		Workers: *streams, PacedWorkers: *pacedStreams,
		Workload: workload.Config{Seed: *seed, TxSize: *txSize, RowSize: *rowSize, Mix: m,
			Customers: prof.customers, Products: prof.products, Orders: prof.orders},
		PhaseDuration: *phase, LatencyRate: *rate, DrainTimeout: *drainTimeout,
		PollInterval: *poll, CleanupInterval: *cleanup, FileBefore: *fileBefore, Codec: *codec, WriterSync: *writerSyncFlag, WriterProtocol: *writerProtocol,
		LoadRows: loadRows.n, LoaderCommand: []string{exe, "load"},
		Progress: env.Stderr,
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("ferry bench: creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("ferry bench: starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, runErr := bench.Run(ctx, cfg)
	if res == nil {
		return fmt.Errorf("ferry bench: %w", runErr)
	}
	if *out != "" {
		if err := writeBenchFiles(*out, res); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "bench: wrote %s\n", filepath.Join(*out, "report.md"))
	}
	if *asJSON {
		if err := report.JSON(env.Stdout, res); err != nil {
			return err
		}
	} else {
		report.Table(env.Stdout, res)
		fmt.Fprintln(env.Stdout)
		for _, g := range report.Goals(res) {
			state := "not measured"
			if g.Known {
				state = map[bool]string{true: "met", false: "NOT met"}[g.Met]
			}
			fmt.Fprintf(env.Stdout, "goal: %s %s: %s (%s)\n", g.Name, g.Want, g.Got, state)
		}
	}
	if runErr != nil {
		return fmt.Errorf("ferry bench: %w", runErr)
	}
	for _, md := range res.Modes {
		if md.Error != "" {
			return fmt.Errorf("ferry bench: mode %s failed: %s", md.Mode, md.Error)
		}
	}
	if l := res.InitialLoad; l != nil && l.Error != "" {
		return fmt.Errorf("ferry bench: the initial-load phase failed: %s", l.Error)
	}
	return nil
}

// profileInt is an integer flag whose default is the profile's: set says
// it was given.
type profileInt struct {
	n   int
	set bool
}

func (p *profileInt) String() string {
	if p == nil || !p.set {
		return ""
	}
	return strconv.Itoa(p.n)
}

func (p *profileInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("want a number of rows, 0 or more")
	}
	p.n, p.set = n, true
	return nil
}

func parseMix(s string) (workload.Mix, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return workload.Mix{}, fmt.Errorf("ferry bench: --mix %q: want insert/update/delete weights such as 40/50/10", s)
	}
	var w [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return workload.Mix{}, fmt.Errorf("ferry bench: --mix %q: %q is not a non-negative integer", s, p)
		}
		w[i] = n
	}
	return workload.Mix{Insert: w[0], Update: w[1], Delete: w[2]}, nil
}

// writeBenchFiles writes the report, the JSON and the charts into dir.
func writeBenchFiles(dir string, res *bench.Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ferry bench: creating %s: %w", dir, err)
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"report.md", func(w io.Writer) error { report.Markdown(w, res); return nil }},
		{"results.json", func(w io.Writer) error { return report.JSON(w, res) }},
		{"throughput.svg", func(w io.Writer) error { return report.ThroughputSVG(w, res) }},
		{"latency.svg", func(w io.Writer) error { return report.LatencySVG(w, res) }},
	}
	for _, f := range files {
		var b bytes.Buffer
		if err := f.write(&b); err != nil {
			return fmt.Errorf("ferry bench: rendering %s: %w", f.name, err)
		}
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("ferry bench: writing %s: %w", path, err)
		}
	}
	return nil
}
