// Package demo runs Ferry end to end in one process, for a first look and
// for end-to-end figures: an embedded JetStream server with its store in a
// temporary directory, a synthetic retail legacy application writing change
// files (bench/workload), the shipper and a receiver with its HTTP API. It
// shows live figures while the legacy writes, then waits for the receiver to
// apply everything and verifies, key by key and change by change, that the
// receiver holds exactly what the change files say (bench/check).
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper/inbox"
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
	// Written, Shipped and Applied count changes, the initial load included.
	Written, Shipped, Applied int64
	// Loaded is the changes of the initial load.
	Loaded int64
	// Writing is how long the legacy wrote after the initial load; Total
	// from then until the receiver had applied everything.
	Writing, Total time.Duration
	// WriteRate is the legacy's changes/s; EndToEnd the changes/s carried
	// from the first write to the last apply (initial load excluded).
	WriteRate, EndToEnd float64
	// Latency is commit→applied per transaction (initial load excluded).
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

// stockKey returns the key of the first stock row of the initial load:
// the workload updates stock rows but never deletes them, so a query for it
// finds it whenever the load was applied.
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

	stages, err := startStages(ctx, &cfg, nc, changes, dataDir)
	if err != nil {
		return nil, err
	}
	defer stages.stop()

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
	fmt.Fprintf(cfg.Out, "  ferry status --dir %s --nats %s --receiver http://%s\n", changes, ns.ClientURL(), stages.httpAddr)
	if cfg.CanaryRate > 0 {
		fmt.Fprintf(cfg.Out, "A canary service (origin %q) writes back %.0f orders/s through POST /v1/commands; the legacy applies them from %s:\n",
			Canary, cfg.CanaryRate, stages.inboxDir)
		fmt.Fprintf(cfg.Out, "  curl -s 'http://%s/v1/tables/%s/rows?prefix=canary-&limit=3'\n", stages.httpAddr, CanaryTable)
		fmt.Fprintf(cfg.Out, "  curl -s 'http://%s/v1/commands/order-canary-u00-000000?wait=5s'\n", stages.httpAddr)
	}
	if cfg.Duration > 0 {
		fmt.Fprintf(cfg.Out, "The legacy writes for %v (Ctrl-C stops it earlier).\n\n", cfg.Duration)
	} else {
		fmt.Fprintf(cfg.Out, "The legacy writes until Ctrl-C.\n\n")
	}

	// The initial load goes first, and the timed run starts once the
	// receiver holds it, so that the figures describe the steady stream.
	loadStart := time.Now()
	if err := leg.load(); err != nil {
		return nil, err
	}
	res.Loaded = leg.changes.Load()
	if err := stages.waitApplied(context.WithoutCancel(ctx), res.Loaded, cfg.CatchUpTimeout); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "Initial load: %d rows written, shipped and applied in %v.\n", res.Loaded, time.Since(loadStart).Round(time.Millisecond))
	// Latency is measured at a fixed rate only: at full speed it measures
	// the queue the legacy builds on purpose.
	var lat *latencies
	if cfg.Rate > 0 {
		lat = &latencies{}
	}
	obs := stages.observe(lat, leg.last.Load())

	start := time.Now()
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

	d := &display{w: cfg.Out, tty: cfg.TTY}
	mon := &monitor{leg: leg, stages: stages, obs: obs, start: start, duration: cfg.Duration, base: res.Loaded}
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
	d.note("\nThe legacy stopped after %d changes; waiting for the receiver to apply them all...\n", res.Written-res.Loaded)

	deadline := time.After(cfg.CatchUpTimeout)
	want := res.Written - res.Loaded
	for {
		s := mon.read()
		if s.Applied.Changes >= want {
			d.show(s)
			break
		}
		select {
		case <-tick.C:
			d.show(s)
		case <-deadline:
			d.show(s)
			return res, fmt.Errorf("demo: the receiver applied %d of %d changes in %v after the legacy stopped (%s); see the log with -v",
				s.Applied.Changes, want, cfg.CatchUpTimeout, stages.problem())
		}
	}
	res.Total = time.Since(start)
	final := mon.read()
	res.Shipped, res.Applied = final.Shipped.Changes+res.Loaded, final.Applied.Changes+res.Loaded
	res.Ratio = final.Ratio()
	res.WriteRate = float64(res.Written-res.Loaded) / res.Writing.Seconds()
	res.EndToEnd = float64(res.Written-res.Loaded) / res.Total.Seconds()
	obs.stop()
	if lat != nil {
		res.Latency = lat.quantiles()
	}

	truth, err := check.FromDir(changes)
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
	fmt.Fprintf(out, "  written   %d changes after the initial load of %d, in %v: %.0f changes/s\n", r.Written-r.Loaded, r.Loaded, r.Writing.Round(time.Millisecond), r.WriteRate)
	fmt.Fprintf(out, "  applied   %d changes in all, the last %v after the start: %.0f changes/s end to end\n", r.Applied, r.Total.Round(time.Millisecond), r.EndToEnd)
	fmt.Fprintf(out, "  compression %.1fx on the stream\n", r.Ratio)
	if r.Latency.Count > 0 {
		fmt.Fprintf(out, "  commit→applied latency over %d transactions: p50 %s, p99 %s, max %s\n", r.Latency.Count, ms(r.Latency.P50), ms(r.Latency.P99), ms(r.Latency.Max))
	} else {
		fmt.Fprintf(out, "  commit→applied latency is measured at a fixed --rate only (at full speed it would measure the queue)\n")
	}
	fmt.Fprintf(out, "Verification against the change files (%d rows in %d tables):\n  %s\n", truth.Rows(), len(truth.Tables), r.Report)
	if !r.Report.FeedChecked {
		fmt.Fprintf(out, "  (the receiver had trimmed its change log: rows compared key by key, changes not counted one by one)\n")
	}
	if r.Report.OK() {
		fmt.Fprintf(out, "  OK: the receiver holds exactly what the legacy wrote; every change applied once.\n")
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
