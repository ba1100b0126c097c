// Package demo runs Ferry end to end in one process, for a first look and
// for end-to-end figures: an embedded JetStream server with its store in a
// temporary directory, a synthetic retail legacy application writing change
// files (bench/workload), the shipper and a receiver with its HTTP API.
//
// It shows the whole roll-out: the legacy has existing rows that are not in
// its change files; the demo reads the stream's mark, dumps every table and
// loads the dumps (package shipper/load, as `ferry load --jsonl --mark`)
// while the legacy keeps writing; the receiver's gate (--wait-load) opens
// once the loads are done. It shows live figures meanwhile, then waits for
// the receiver to apply everything and verifies, key by key and change by
// change, that the receiver holds exactly the legacy's database: the dumps
// with the change files applied over them (bench/check).
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/shipper/inbox"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultDuration is how long the legacy writes by default.
const DefaultDuration = 20 * time.Second

// Source is the name of the demo's legacy source.
const Source = "retail"

// Config configures a demo run.
type Config struct {
	// Dir holds the change files, the stream's store and the receiver's
	// data; "" means a new temporary directory, removed at the end unless
	// Keep.
	Dir  string
	Keep bool
	// HTTP is the receiver API's listen address (port 0: a free port).
	HTTP string
	// Rate is the legacy's rate in changes per second; 0 = as fast as it can.
	Rate float64
	// Burst multiplies the rate for 1 s every 5 s (<= 1: no bursts).
	Burst   float64
	RowSize int
	TxSize  int
	// Duration the legacy writes; 0 = until ctx ends (Ctrl-C).
	Duration time.Duration
	Seed     uint64
	// Out receives the live figures and the summary; TTY redraws in place.
	Out io.Writer
	TTY bool
	// Interval between live readings (default 500 ms).
	Interval time.Duration
	// Log receives the components' logs (default: discard).
	Log *slog.Logger
	// CatchUpTimeout bounds the wait for the receiver once the legacy
	// stopped (default 2 min).
	CatchUpTimeout time.Duration
	// CanaryRate is the canary service's write-back commands per second
	// (orders placed and cancelled by canary users, writeback.go); 0: no
	// canary.
	CanaryRate float64
}

// Result is what a run measured.
type Result struct {
	Dir string
	// Written, Shipped and Applied count the legacy's changes (the change
	// files'; the initial load's rows are not changes).
	Written, Shipped, Applied int64
	// Loaded is the rows the initial load sent, every table; Mark the
	// stream sequence the dumps were taken after.
	Loaded int64
	Mark   uint64
	// Loads are the tables' loads as the receiver saw them at the end.
	Loads []TableLoad
	// LoadTime is from the start until the receiver applied the last
	// table's load; LoadRate is Loaded over it.
	LoadTime time.Duration
	LoadRate float64
	// Gate is what the demo saw of the receiver's /readyz; Gate.ReadyAfter
	// is the time to ready.
	Gate GateLog
	// Writing is how long the legacy wrote (the loads ran meanwhile);
	// Total from the start until the receiver had applied everything.
	Writing, Total time.Duration
	// WriteRate is the legacy's changes/s; EndToEnd the changes/s carried
	// from the first write to the last apply.
	WriteRate, EndToEnd float64
	// Latency is commit→applied per transaction (load rows excluded).
	Latency Quantiles
	// Ratio is raw change-file bytes over compressed bytes on the stream.
	Ratio float64
	// Report is the verification's outcome.
	Report *check.Report
	// WriteBack is the canary's write-backs and their verification (nil
	// without a canary).
	WriteBack *WriteBack
}

func (c *Config) defaults() error {
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Interval <= 0 {
		c.Interval = 500 * time.Millisecond
	}
	if c.CatchUpTimeout <= 0 {
		c.CatchUpTimeout = 2 * time.Minute
	}
	if c.HTTP == "" {
		c.HTTP = "127.0.0.1:0"
	}
	if c.Rate < 0 || c.Duration < 0 || c.CanaryRate < 0 {
		return fmt.Errorf("demo: negative rate or duration")
	}
	return nil
}

// stockKey returns the key of the first stock row of the legacy's existing
// rows: the workload updates stock rows but never deletes them, so a query
// for it finds it once the load was applied.
func stockKey(ws *workload.Stream) (string, bool) {
	for _, tr := range ws.Initial() {
		if tr.Table.Name == "stock" && len(tr.Rows) > 0 {
			return string(tr.Rows[0].AppendKey(nil, tr.Table)), true
		}
	}
	return "", false
}

// Run runs the demo until cfg.Duration has passed or ctx ends, then verifies
// the receiver. It returns an error if a component failed; a verification
// that found differences is reported in Result.Report.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Result{}
	root := cfg.Dir
	if root == "" {
		d, err := os.MkdirTemp("", "ferry-demo-")
		if err != nil {
			return nil, fmt.Errorf("demo: creating a temporary directory: %w", err)
		}
		root = d
		if !cfg.Keep {
			defer func() {
				err := os.RemoveAll(root)
				if err == nil {
					fmt.Fprintf(cfg.Out, "Removed the demo's files under %s (--keep keeps them).\n", root)
				} else {
					fmt.Fprintf(cfg.Out, "Removing the demo's files under %s: %v\n", root, err)
				}
			}()
		}
	}
	res.Dir = root
	changes, streamDir, dataDir := filepath.Join(root, "changes"), filepath.Join(root, "jetstream"), filepath.Join(root, "receiver")
	dumpDir := filepath.Join(root, "dump")

	ns, err := startNATS(streamDir)
	if err != nil {
		return nil, err
	}
	defer ns.Shutdown()
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("ferry demo"), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1))
	if err != nil {
		return nil, fmt.Errorf("demo: connecting to the embedded JetStream server: %w", err)
	}
	defer nc.Close()

	ws, err := workload.NewStream(workload.Config{Seed: cfg.Seed, TxSize: cfg.TxSize, RowSize: cfg.RowSize}, 0)
	if err != nil {
		return nil, fmt.Errorf("demo: %w (check --tx-size and --row-size)", err)
	}
	w, err := format.OpenWriter(changes, Source, format.WithSync(format.SyncInterval, 0))
	if err != nil {
		return nil, fmt.Errorf("demo: opening the legacy's change files: %w", err)
	}
	writerOpen := true
	defer func() {
		if writerOpen {
			w.Close()
		}
	}()
	leg := &legacy{w: w, stream: ws, rate: cfg.Rate, burst: cfg.Burst}

	// The loader's stream, opened as `ferry load` opens it (creating it if
	// the shipper has not yet). Ctrl-C stops the legacy only: the loads
	// finish, so that the verification has the whole database to check.
	lctx := context.WithoutCancel(ctx)
	js, err := load.OpenJetStream(lctx, nc, jsclient.Config{}, 0)
	if err != nil {
		return nil, fmt.Errorf("demo: opening the change stream for the initial load: %w", err)
	}
	var tables []string
	for _, tr := range ws.Initial() {
		tables = append(tables, tr.Table.Name)
	}
	stages, err := startStages(ctx, &cfg, nc, changes, dataDir, tables)
	if err != nil {
		return nil, err
	}
	defer stages.stop()

	// The mark first, then the dump (format/SPEC.md 24.4): the legacy
	// writes its first change after both, so the dumps are its database
	// as of the mark, and every change confirmed after it is newer.
	mark, err := load.ReadMark(lctx, js)
	if err != nil {
		return nil, fmt.Errorf("demo: reading the stream's mark: %w", err)
	}
	res.Mark = mark.Seq
	dumps, base, err := writeDumps(dumpDir, ws)
	if err != nil {
		return nil, err
	}

	where := ""
	if cfg.Dir == "" && !cfg.Keep {
		where = " (removed at the end; --keep keeps them)"
	}
	fmt.Fprintf(cfg.Out, "Ferry demo: files under %s%s\n", root, where)
	fmt.Fprintf(cfg.Out, "  change files  %s (ferry inspect %s)\n", changes, changes)
	fmt.Fprintf(cfg.Out, "  JetStream     %s (stream %s, store %s)\n", ns.ClientURL(), wire.DefaultStream, streamDir)
	fmt.Fprintf(cfg.Out, "  receiver      %s (Pebble store), HTTP API on http://%s\n", dataDir, stages.httpAddr)
	fmt.Fprintf(cfg.Out, "Query the receiver while it runs:\n")
	fmt.Fprintf(cfg.Out, "  open http://%s/ui/   (the cockpit: gate, lag, charts, errors, rows, live feed)\n", stages.httpAddr)
	fmt.Fprintf(cfg.Out, "  curl -s http://%s/v1/status\n", stages.httpAddr)
	fmt.Fprintf(cfg.Out, "  curl -s 'http://%s/v1/tables/orders/rows?limit=3'\n", stages.httpAddr)
	if key, ok := stockKey(ws); ok {
		// Stock rows are updated, never deleted: the key stays there.
		fmt.Fprintf(cfg.Out, "  curl -s http://%s/v1/tables/stock/rows/%s\n", stages.httpAddr, url.PathEscape(key))
	}
	fmt.Fprintf(cfg.Out, "  curl -s 'http://%s/v1/changes?after=0&limit=5'\n", stages.httpAddr)
	fmt.Fprintf(cfg.Out, "  curl -s http://%s/readyz   (503 until every initial load is done: --wait-load %s)\n", stages.httpAddr, strings.Join(tables, ","))
	fmt.Fprintf(cfg.Out, "  ferry status --dir %s --nats %s --receiver http://%s\n", changes, ns.ClientURL(), stages.httpAddr)
	if cfg.CanaryRate > 0 {
		fmt.Fprintf(cfg.Out, "A canary service (origin %q) writes back %.0f orders/s through POST /v1/commands; the legacy applies them from %s:\n",
			Canary, cfg.CanaryRate, stages.inboxDir)
		fmt.Fprintf(cfg.Out, "  curl -s 'http://%s/v1/tables/%s/rows?prefix=canary-&limit=3'\n", stages.httpAddr, CanaryTable)
		fmt.Fprintf(cfg.Out, "  curl -s 'http://%s/v1/commands/order-canary-u00-000000?wait=5s'\n", stages.httpAddr)
	}
	nrows := 0
	for _, d := range dumps {
		nrows += d.rows
	}
	fmt.Fprintf(cfg.Out, "The legacy holds %d rows in %d tables that are not in its change files. The roll-out: the mark\n", nrows, len(dumps))
	fmt.Fprintf(cfg.Out, "was read (ferry load mark --nats %s: %d), then the tables dumped to %s; the dumps are\n", ns.ClientURL(), mark.Seq, dumpDir)
	fmt.Fprintf(cfg.Out, "loaded while the legacy writes, as these commands would (in parallel):\n")
	for _, d := range dumps {
		fmt.Fprintf(cfg.Out, "  %s\n", d.command(ns.ClientURL(), mark.Seq))
	}
	if cfg.Duration > 0 {
		fmt.Fprintf(cfg.Out, "The legacy writes for %v (Ctrl-C stops it earlier; the loads finish).\n\n", cfg.Duration)
	} else {
		fmt.Fprintf(cfg.Out, "The legacy writes until Ctrl-C (the loads finish).\n\n")
	}

	// Latency is measured at a fixed rate only: at full speed it measures
	// the queue the legacy builds on purpose.
	var lat *latencies
	if cfg.Rate > 0 {
		lat = &latencies{}
	}
	obs := stages.observe(lat, leg.last.Load())
	defer obs.stop()

	probe, err := api.NewClient("http://"+stages.httpAddr, "", &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d := &display{w: cfg.Out, tty: cfg.TTY}
	start := time.Now()
	mon := &monitor{leg: leg, stages: stages, obs: obs, api: probe, start: start, duration: cfg.Duration, dumps: dumps, done: map[string]bool{}}
	// The first reading: the gate, closed, before anything is loaded.
	d.show(mon.read())
	loads := startLoads(lctx, js, dumps, mark, &cfg)
	defer loads.stop()
	mon.loads = loads
	wctx, stopWriting := context.WithCancel(ctx)
	if cfg.Duration > 0 {
		wctx, stopWriting = context.WithTimeout(ctx, cfg.Duration)
	}
	defer stopWriting()
	werr := make(chan error, 1)
	go func() { werr <- leg.run(wctx) }()
	// Write-back: the legacy takes commands from its inbox (until every
	// command the canary sent has its outcome), the canary sends them
	// while the legacy writes.
	var wbl *wbLegacy
	var can *canary
	canaryDone, consumeDone := make(chan struct{}), make(chan error, 1)
	stopConsume := func() {}
	if cfg.CanaryRate > 0 {
		wbl = newWBLegacy(leg)
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stopConsume = func() { cancel(); <-consumeDone; stopConsume = func() {} }
		go func() { consumeDone <- inbox.Consume(cctx, stages.inboxDir, inbox.ConsumeConfig{}, wbl.handle) }()
		if can, err = newCanary("http://"+stages.httpAddr, cfg.CanaryRate, cfg.Seed); err != nil {
			stopConsume()
			return nil, err
		}
		go func() { defer close(canaryDone); can.run(wctx) }()
	} else {
		close(canaryDone)
	}
	defer func() { stopConsume() }()

	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	var writeErr error
writing:
	for {
		select {
		case writeErr = <-werr:
			break writing
		case <-tick.C:
			d.show(mon.read())
		}
	}
	res.Writing = time.Since(start)
	// The canary stops with the legacy's writing and waits for the
	// outcomes of what it sent; then the legacy stops taking commands.
	<-canaryDone
	stopConsume()
	writerOpen = false
	if err := w.Close(); err != nil && writeErr == nil {
		writeErr = fmt.Errorf("demo: closing the legacy's change files: %w", err)
	}
	if writeErr != nil {
		return res, writeErr
	}
	res.Written = leg.changes.Load()
	d.note("\nThe legacy stopped after %d changes; waiting for the loads to finish and the receiver to apply everything...\n", res.Written)

	// Done: the loaders returned, the receiver applied every change and
	// every load, and its gate is open.
	catchUp := time.Now()
	if err := loads.wait(cfg.CatchUpTimeout); err != nil {
		return res, err
	}
	deadline := time.After(cfg.CatchUpTimeout - time.Since(catchUp))
	want := res.Written
	var final *Snapshot
	for {
		s := mon.read()
		if s.Applied.Changes >= want && s.LoadsDone && s.Gate.Ready {
			d.show(s)
			final = s
			break
		}
		select {
		case <-tick.C:
			d.show(s)
		case <-deadline:
			d.show(s)
			rows, est := loadTotals(s.Loads)
			return res, fmt.Errorf("demo: %v after the legacy stopped the receiver applied %d of %d changes and %d of ~%d load rows (loads done: %v), gate %s (%s); see the log with -v",
				time.Since(catchUp).Round(time.Millisecond), s.Applied.Changes, want, rows, est, s.LoadsDone, s.Gate, stages.problem())
		}
	}
	res.Total = time.Since(start)
	res.Shipped, res.Applied = final.Shipped.Changes, final.Applied.Changes
	res.Ratio = final.Ratio()
	res.WriteRate = float64(res.Written) / res.Writing.Seconds()
	res.EndToEnd = float64(res.Written) / res.Total.Seconds()
	obs.stop()
	if lat != nil {
		res.Latency = lat.quantiles()
	}
	res.Gate = mon.gate
	res.Gate.Final = final.Gate
	res.Loads = final.Loads
	res.Loaded = loads.rows()
	for _, l := range res.Loads {
		res.LoadTime = max(res.LoadTime, l.DoneAfter)
	}
	if res.LoadTime > 0 {
		res.LoadRate = float64(res.Loaded) / res.LoadTime.Seconds()
	}

	// The legacy's database: the dumps with the change files over them.
	truth, err := check.FromDir(changes, check.WithBase(base))
	if err != nil {
		return res, err
	}
	vctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The change feed is counted change by change unless the receiver has
	// already trimmed its change log (then the state is still compared).
	first, _ := stages.recv.Store().ChangeRange()
	rep, err := check.Compare(vctx, truth, check.NewHTTPReceiver("http://"+stages.httpAddr), check.Options{SkipFeed: first > 1})
	if err != nil {
		return res, fmt.Errorf("demo: verifying the receiver: %w", err)
	}
	res.Report = rep
	if can != nil {
		res.WriteBack = can.verify(vctx, wbl, changes)
	}
	printSummary(cfg.Out, res, truth)
	return res, nil
}

// startNATS starts the embedded JetStream server, listening on a free
// loopback port so that `ferry status --nats` can look at it too.
func startNATS(storeDir string) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: storeDir,
		NoLog: true, NoSigs: true, ServerName: "ferry-demo"})
	if err != nil {
		return nil, fmt.Errorf("demo: configuring the embedded JetStream server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("demo: the embedded JetStream server did not start within 10 s (store %s)", storeDir)
	}
	return ns, nil
}

func printSummary(out io.Writer, r *Result, truth *check.Truth) {
	fmt.Fprintf(out, "\nSummary\n")
	var dropped uint64
	for _, l := range r.Loads {
		dropped += l.Dropped
	}
	fmt.Fprintf(out, "  load      %d rows of %d tables from dumps at mark %d, done at the receiver %v after the start: %.0f rows/s\n",
		r.Loaded, len(r.Loads), r.Mark, r.LoadTime.Round(time.Millisecond), r.LoadRate)
	fmt.Fprintf(out, "            %d load rows dropped: a live change confirmed after the mark had the key first\n", dropped)
	ready := "never opened during the run"
	if r.Gate.ReadyAfter > 0 {
		ready = fmt.Sprintf("ready %v after the start", r.Gate.ReadyAfter.Round(time.Millisecond))
	}
	fmt.Fprintf(out, "  gate      %s; /readyz read %d times: 503 %d times while loading, 200 %d times while loading\n",
		ready, r.Gate.Readings, r.Gate.ClosedLoading, r.Gate.OpenLoading)
	fmt.Fprintf(out, "  written   %d changes while and after the load, in %v: %.0f changes/s\n", r.Written, r.Writing.Round(time.Millisecond), r.WriteRate)
	fmt.Fprintf(out, "  applied   %d changes, the last %v after the start: %.0f changes/s end to end\n", r.Applied, r.Total.Round(time.Millisecond), r.EndToEnd)
	fmt.Fprintf(out, "  compression %.1fx on the stream\n", r.Ratio)
	if r.Latency.Count > 0 {
		fmt.Fprintf(out, "  commit→applied latency over %d transactions: p50 %s, p99 %s, max %s\n", r.Latency.Count, ms(r.Latency.P50), ms(r.Latency.P99), ms(r.Latency.Max))
	} else {
		fmt.Fprintf(out, "  commit→applied latency is measured at a fixed --rate only (at full speed it would measure the queue)\n")
	}
	fmt.Fprintf(out, "Verification against the legacy's database, the dumps with the change files over them (%d rows in %d tables):\n  %s\n", truth.Rows(), len(truth.Tables), r.Report)
	if !r.Report.FeedChecked {
		fmt.Fprintf(out, "  (the receiver had trimmed its change log: rows compared key by key, changes not counted one by one)\n")
	}
	if r.Report.OK() {
		fmt.Fprintf(out, "  OK: the receiver holds exactly the legacy's rows, loaded and written; every change applied once.\n")
	} else {
		fmt.Fprintf(out, "  FAILED: %v\n", r.Report.Err())
	}
	if wb := r.WriteBack; wb != nil {
		fmt.Fprintf(out, "Write-back: %s\n", wb)
		if wb.OK() {
			fmt.Fprintf(out, "  OK: every command has exactly one outcome; applied ones are in the legacy and the receiver, rejected ones nowhere.\n")
		} else {
			fmt.Fprintf(out, "  FAILED: %s\n", strings.Join(wb.Problems, "; "))
		}
	}
}
