package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	fcommand "github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/format/wire/natsconn"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/store"
)

// sourceList is a repeatable flag that also takes comma-separated lists (so
// that FERRY_SOURCE=a,b and YAML lists work).
type sourceList []string

func (s *sourceList) String() string { return strings.Join(*s, ",") }
func (s *sourceList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

func runReceive(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry receive", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	data := fs.String("data", "", "directory of the receiver's store (required)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of the HTTP API (loopback by default; the service runs next to it)")
	stream := fs.String("stream", wire.DefaultStream, "JetStream stream name")
	prefix := fs.String("subject-prefix", wire.DefaultSubjectPrefix, "subject prefix: source S is on <prefix>.S")
	var sources sourceList
	fs.Var(&sources, "source", "consume only this source (repeatable, or comma separated; default: every source)")
	readyLag := fs.Duration("ready-lag", receiver.DefaultReadyLag, "/readyz answers 200 once every source lags less than this")
	var waitLoads sourceList
	fs.Var(&waitLoads, "wait-load", "/readyz also waits until the initial load (ferry load) of this table is done (repeatable, or comma separated)")
	webhookURL := fs.String("webhook", "", "push the change log to this URL (POST, JSON batches, retried until 2xx)")
	webhookTokenFile := fs.String("webhook-token-file", "", "file holding a bearer token sent to the webhook")
	rebuild := fs.Bool("rebuild", false, "discard the store and rebuild it from the start of the stream")
	midChain := fs.Bool("start-mid-chain", false, "let a source with nothing applied start wherever the stream's first message of it is (the stream's retention dropped the beginning); default: that is a gap")
	tokenFile := fs.String("token-file", "", "file holding the bearer token the API requires (or FERRY_API_TOKEN)")
	keepChanges := fs.Uint64("keep-changes", receiver.DefaultKeepChanges, "keep at most this many changes in the change log (0: no count bound)")
	keepAge := fs.Duration("keep-age", receiver.DefaultKeepAge, "drop changes older than this from the change log (0: no age bound)")
	tombRetention := fs.Duration("tombstone-retention", receiver.DefaultTombstoneRetention, "keep deletes' tombstones this long, so that an older change arriving later cannot bring the row back")
	cmdRetention := fs.Duration("command-retention", receiver.DefaultCommandRetention, "keep a write-back command's records this long after its outcome: the window in which a resubmission of its id is answered with that outcome (at least 10m)")
	cacheMB := fs.Int64("cache-mb", receiver.DefaultCacheSize>>20, "Pebble block cache, MiB")
	maxTxMB := fs.Int64("max-tx-mb", 64, "largest transaction the receiver holds, MiB: a split frame's span and a transaction's decoding working set (bounds memory whatever the stream carries)")
	memLimitMB := fs.Int64("memory-limit-mb", 0, "soft memory limit of the process, MiB (default 192 + --cache-mb; GOMEMLIMIT wins)")
	syncCommits := fs.Bool("sync", false, "fsync every store commit (not needed for exactly-once: see the receiver/store docs)")
	checkpointDir := fs.String("checkpoint-dir", "", "enable POST /v1/checkpoint, writing checkpoints under this directory")
	checkpoint := fs.String("checkpoint", "", "write a checkpoint of the (stopped) store in --data to this directory and exit")
	uiOn := fs.Bool("ui", true, "serve the cockpit page at /ui/ (--ui=false turns it off)")
	pprofAddr := fs.String("pprof", "", "serve Go's net/http/pprof on this address (e.g. 127.0.0.1:6060; off by default)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	origin := fs.String("origin", "", "write-back: this service's name; enables POST /v1/commands (with --command-table)")
	var cmdTables, exclude sourceList
	fs.Var(&cmdTables, "command-table", "write-back: TABLE=SOURCE, a table the service may write and the legacy source that masters it (repeatable, or comma separated)")
	maxCmd := fs.Int("max-command-bytes", fcommand.DefaultMaxImage, "write-back: largest after image a command may carry")
	fs.Var(&exclude, "exclude-origin", "leave this origin's changes out of the SSE feed and the webhook: a service's own write-backs (repeatable; no echo)")
	fs.String("config", "", "YAML config file (keys named like the flags; or FERRY_CONFIG)")
	nf := addNATSFlags(fs, "ferry receive")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry receive --nats URL[,URL...] --data DIR [--http 127.0.0.1:8080] [--stream NAME] [--source NAME...] [--ready-lag 5s] [--wait-load TABLE...] [--webhook URL] [--rebuild]")
		fmt.Fprintln(env.Stderr, "       ferry receive --data DIR --checkpoint OUTDIR")
		fmt.Fprintln(env.Stderr, "\nThe sidecar: applies the stream exactly once into a local store and serves it over HTTP")
		fmt.Fprintln(env.Stderr, "(rows, change log, SSE feed, status, /healthz, /readyz, /metrics). Flags may also come from")
		fmt.Fprintln(env.Stderr, "FERRY_<FLAG> environment variables (FERRY_DATA, FERRY_READY_LAG...) and --config.")
		fmt.Fprintln(env.Stderr, "NATS outages are waited out; a server refusing the credentials for good (expired, revoked,")
		fmt.Fprintln(env.Stderr, "unknown) stops it cleanly (the store closed, nothing applied lost) with a non-zero exit.")
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	log, err := newLogger(env, *logLevel, *logFormat)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry receive: %w", err)}
	}
	if *data == "" {
		return &exitError{code: 2, err: errors.New("ferry receive: --data DIR is required (where the store lives)")}
	}
	if *checkpoint != "" {
		return checkpointStore(filepath.Join(*data, receiver.StoreDir), *checkpoint, env)
	}
	token := env.Getenv("FERRY_API_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("ferry receive: reading --token-file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return &exitError{code: 2, err: fmt.Errorf("ferry receive: --token-file %s is empty", *tokenFile)}
		}
	}
	opts := []receiver.Option{
		receiver.WithDataDir(*data),
		receiver.WithStream(*stream),
		receiver.WithSubjectPrefix(*prefix),
		receiver.WithReadyLag(*readyLag),
		receiver.WithRebuild(*rebuild),
		receiver.WithStartMidChain(*midChain),
		receiver.WithToken(token),
		receiver.WithChangeLogRetention(*keepChanges, *keepAge),
		receiver.WithTombstoneRetention(*tombRetention),
		receiver.WithCommandRetention(*cmdRetention),
		receiver.WithCacheSize(*cacheMB << 20),
		receiver.WithMaxTxBytes(*maxTxMB << 20),
		receiver.WithSync(*syncCommits),
		receiver.WithListen(*httpAddr),
		receiver.WithUI(*uiOn),
		receiver.WithLogger(log),
	}
	if len(sources) > 0 {
		opts = append(opts, receiver.WithSources(sources...))
	}
	if len(waitLoads) > 0 {
		opts = append(opts, receiver.WithWaitLoad(waitLoads...))
	}
	if *origin != "" || len(cmdTables) > 0 {
		tables := map[string]string{}
		for _, tv := range cmdTables {
			t, src, ok := strings.Cut(tv, "=")
			if !ok {
				return &exitError{code: 2, err: fmt.Errorf("ferry receive: --command-table %q: want TABLE=SOURCE", tv)}
			}
			tables[t] = src
		}
		opts = append(opts, receiver.WithCommands(*origin, tables), receiver.WithMaxCommandImage(*maxCmd))
	}
	if len(exclude) > 0 {
		opts = append(opts, receiver.WithExcludeOrigins(exclude...))
	}
	if *webhookURL != "" {
		wt := ""
		if *webhookTokenFile != "" {
			b, err := os.ReadFile(*webhookTokenFile)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("ferry receive: reading --webhook-token-file: %w", err)}
			}
			wt = strings.TrimSpace(string(b))
		}
		opts = append(opts, receiver.WithWebhook(*webhookURL, wt))
	}
	if *checkpointDir != "" {
		opts = append(opts, receiver.WithCheckpointDir(*checkpointDir))
	}
	// The Go heap grows to twice what is live by default; a soft limit keeps
	// the sidecar's RSS near its working set (measured: ~230 MiB instead of
	// ~370 MiB at the peak of a catch-up with the default cache).
	if env.Getenv("GOMEMLIMIT") == "" {
		limit := *memLimitMB
		if limit <= 0 {
			limit = 192 + *cacheMB
		}
		debug.SetMemoryLimit(limit << 20)
	}
	// ctx now also ends if NATS refuses the credentials for good: the
	// receiver then stops as on SIGTERM (the store closed normally, every
	// committed batch kept with its position) and the command fails.
	nc, ctx, err := natsconn.Dial(ctx, withLogger(nf, log))
	if err != nil {
		return fmt.Errorf("ferry receive: %w", err)
	}
	defer nc.Close()
	opts = append(opts, receiver.WithNATS(nc.Conn))
	r, err := receiver.New(opts...)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("ferry receive: %w", err)}
	}
	if *pprofAddr != "" {
		stop, err := servePprof(ctx, *pprofAddr, log)
		if err != nil {
			return fmt.Errorf("ferry receive: --pprof: %w", err)
		}
		defer stop()
	}
	log.Info("ferry receive starting", "data", *data, "http", *httpAddr, "stream", *stream, "sources", sources.String())
	err = r.Run(ctx)
	if lost := natsconn.Lost(ctx); lost != nil {
		if err != nil {
			log.Warn("receiver stopped", "err", err)
		}
		return fmt.Errorf("ferry receive: %w", lost)
	}
	if err != nil {
		return fmt.Errorf("ferry receive: %w", err)
	}
	return nil
}

// servePprof serves the profiling endpoints on their own listener (never on
// the API's) until stop is called.
func servePprof(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "err", err)
		}
	}()
	log.Info("serving pprof", "addr", ln.Addr().String())
	return func() { srv.Close(); <-done }, nil
}

// checkpointStore writes a checkpoint of a stopped receiver's store.
func checkpointStore(dir, out string, env *Env) error {
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("ferry receive: no store at %s: %w", dir, err)
	}
	st, err := store.Open(dir)
	if err != nil {
		return fmt.Errorf("ferry receive: %w (stop the running receiver, or use its POST /v1/checkpoint with --checkpoint-dir)", err)
	}
	defer st.Close()
	if err := st.Checkpoint(out); err != nil {
		return fmt.Errorf("ferry receive: %w", err)
	}
	fmt.Fprintf(env.Stdout, "checkpoint written to %s; seed a receiver with it as %s/%s\n", out, "<data>", receiver.StoreDir)
	return nil
}
