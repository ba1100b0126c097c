package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/format/wire/natsconn"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/inbox"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// runShip binds the flags of `ferry ship` to package shipper: one Shipper per
// source, sharing a NATS connection, a compressor and a metrics registry.
func runShip(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry ship", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	nf := addNATSFlags(fs, "ferry ship")
	var (
		dir         = fs.String("dir", "", "directory of the source's change files (with --source)")
		source      = fs.String("source", "", "source name (with --dir); the config file may list several sources instead")
		config      = fs.String("config", "", "YAML config file: any flag by name, plus sources: [{name, dir}, ...]")
		stream      = fs.String("stream", wire.DefaultStream, "JetStream stream name")
		prefix      = fs.String("subject-prefix", wire.DefaultSubjectPrefix, "subject prefix: a source ships on <prefix>.<source>")
		replicas    = fs.Int("replicas", 1, "stream replicas when creating it (an existing stream must match)")
		dupWindow   = fs.Duration("duplicates", jsclient.DefaultDuplicates, "stream de-duplication window when creating it")
		codec       = fs.String("codec", "zstd", "message compression: zstd, s2 or none")
		maxBatch    = fs.Int("max-batch-bytes", 0, "raw bytes per message (default: the server's max_payload less headers)")
		maxChanges  = fs.Int("max-batch-changes", 0, "changes per message (0 = no limit; a transaction is never split for it)")
		linger      = fs.Duration("linger", shipper.DefaultLinger, "pace of messages that are not full: at most one per linger to a live writer (a lone commit after a quiet spell leaves at once); 0 sends every read at once")
		inflight    = fs.Int64("max-inflight-bytes", shipper.DefaultMaxInFlightBytes, "message bytes published but not yet acknowledged")
		workers     = fs.Int("compress-workers", 0, "goroutines compressing messages per source (0 = 2, or 1 on one CPU)")
		retention   = fs.String("retention", "keep", "shipped segments: keep, delete or archive")
		minAge      = fs.Duration("retention-min-age", shipper.DefaultMinAge, "keep shipped segments at least this long after their ack (must exceed the server's sync_interval)")
		archiveDir  = fs.String("archive-dir", "", "where --retention archive moves shipped segments (same file system)")
		leaseTTL    = fs.Duration("lease-ttl", jsclient.DefaultLeaseTTL, "TTL of the per-source lease that keeps a second shipper out (for a new lease bucket)")
		metricsAddr = fs.String("metrics-addr", "", "serve Prometheus /metrics and /healthz on this address (e.g. 127.0.0.1:9464)")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn or error")
		logFormat   = fs.String("log-format", "text", "log format: text or json")
		inboxDir    = fs.String("inbox", "", "write-back: deliver the source's commands as files in this directory (one source only; SPEC.md, Write-back commands)")
		inboxURL    = fs.String("inbox-endpoint", "", "write-back: also POST every inbox file to this URL of the legacy (with --inbox)")
		inboxRescan = fs.Duration("inbox-rescan", inbox.DefaultRescanBack, "write-back: how far back in the change files a restarted agent looks for outcomes of commands it had delivered (a command redelivered after that gets its outcome written again by the legacy)")
	)
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry ship --dir DIR --source NAME --nats URL[,URL...] [flags]")
		fmt.Fprintln(env.Stderr, "       ferry ship --config FILE")
		fmt.Fprintln(env.Stderr, "\nTails a legacy application's change files and publishes them to a JetStream stream,")
		fmt.Fprintln(env.Stderr, "exactly once and in order. Flags override FERRY_<FLAG> environment variables, which")
		fmt.Fprintln(env.Stderr, "override the config file. SIGTERM drains what is in flight and exits 0. NATS outages are")
		fmt.Fprintln(env.Stderr, "waited out; a server refusing the credentials for good (expired, revoked, unknown) stops it")
		fmt.Fprintln(env.Stderr, "the same way, with a non-zero exit.")
		fs.PrintDefaults()
	}
	file, ok, err := parseFlags(fs, env, args, false, "sources")
	if !ok {
		return err
	}
	log, err := newLogger(env, *logLevel, *logFormat)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry ship: %w", err)}
	}

	// Sources: --dir/--source (flag or environment) replace the file's list.
	var sources []shipper.SourceConfig
	switch {
	case *dir != "" || *source != "":
		if *dir == "" || *source == "" {
			return &exitError{code: 2, err: errors.New("ferry ship: --dir and --source go together")}
		}
		sources = []shipper.SourceConfig{{Name: *source, Dir: *dir}}
	default:
		if sources, err = shipper.ParseSources(file["sources"]); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("ferry ship: config file %s: %w", *config, err)}
		}
	}
	if len(sources) == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("ferry ship: no source: give --dir and --source, or a config file with sources")}
	}
	c, err := wire.ParseCodec(*codec)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry ship: --codec: %w", err)}
	}
	ret, err := shipper.ParseRetention(*retention)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry ship: --retention: %w", err)}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := shipper.NewMetrics(reg)
	if err != nil {
		return err
	}
	opts := []shipper.Option{
		shipper.WithCodec(c), shipper.WithMetrics(metrics),
		shipper.WithLinger(*linger), shipper.WithMaxInFlight(*inflight, shipper.DefaultMaxInFlightMsgs),
		shipper.WithRetention(ret, *minAge, *archiveDir),
	}
	if *maxBatch > 0 {
		opts = append(opts, shipper.WithMaxBatchBytes(*maxBatch))
	}
	if *workers > 0 {
		opts = append(opts, shipper.WithCompressWorkers(*workers))
	}
	if *maxChanges > 0 {
		opts = append(opts, shipper.WithMaxBatchChanges(*maxChanges))
	}

	opts = append(opts, shipper.WithLogger(log))
	if err := shipper.ValidateOptions(opts...); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry ship: %w", err)}
	}

	// ctx now also ends if NATS refuses the credentials for good: the
	// sources then stop as on SIGTERM (checkpoints saved) and the command
	// fails, for its supervisor to see.
	nc, ctx, err := natsconn.Dial(ctx, withLogger(nf, log))
	if err != nil {
		return fmt.Errorf("ferry ship: %w", err)
	}
	defer nc.Close()
	cfg := jsclient.Config{Stream: *stream, Prefix: *prefix, Replicas: *replicas, Duplicates: *dupWindow, LeaseTTL: *leaseTTL}
	group, err := shipper.NewGroup(nc.Conn, cfg, sources, opts...)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry ship: %w", err)}
	}
	if err := reg.Register(group.Collector()); err != nil {
		return fmt.Errorf("ferry ship: registering metrics: %w", err)
	}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("ferry ship: --metrics-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", group.ServeHealth)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("metrics", "addr", ln.Addr().String())
	}
	if *inboxDir != "" {
		stop, err := startInbox(ctx, nc.Conn, sources, inbox.Config{Dir: *inboxDir, Endpoint: *inboxURL, RescanBack: *inboxRescan, Logger: log})
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("ferry ship: %w", err)}
		}
		defer stop()
	}
	err = group.Run(ctx)
	if lost := natsconn.Lost(ctx); lost != nil {
		return fmt.Errorf("ferry ship: %w", lost)
	}
	if err != nil {
		return fmt.Errorf("ferry ship: %w", err)
	}
	log.Info("stopped: everything in flight was acknowledged")
	return nil
}

// newLogger builds the command's slog logger.
func newLogger(env *Env, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// startInbox runs the write-back agent of the one source beside the
// shipper; stop ends it and waits.
func startInbox(ctx context.Context, nc *nats.Conn, sources []shipper.SourceConfig, cfg inbox.Config) (stop func(), err error) {
	if len(sources) != 1 {
		return nil, fmt.Errorf("--inbox takes one source, %d given", len(sources))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cfg.Source, cfg.ChangeDir = sources[0].Name, sources[0].Dir
	ag, err := inbox.New(js, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ag.Run(ctx); err != nil {
			cfg.Logger.Error("write-back agent stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
