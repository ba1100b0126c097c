// Package receiver is Ferry's receiving side as a library: a Receiver
// consumes a Ferry stream from NATS JetStream, applies every change exactly
// once into a local Pebble store (receiver/store, receiver/consume), serves
// it to the microservice next to it over HTTP (receiver/api) and optionally
// pushes the change log to a webhook (receiver/webhook). `ferry receive`, the
// demo and the bench embed it.
package receiver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/ui"
	"github.com/ferrysync/ferry/receiver/webhook"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status and SourceStatus are the receiver's status, as /v1/status serves it.
type (
	Status       = api.Status
	SourceStatus = api.SourceStatus
	LoadStatus   = api.LoadStatus
)

// Receiver consumes a stream into a store and serves it.
type Receiver struct {
	o    options
	log  *slog.Logger
	st   *store.Store
	dec  *wire.Decompressor
	ap   *consume.Applier
	cons *consume.Consumer
	hook *webhook.Webhook
	h    *api.Handler
	reg  *prometheus.Registry
	m    *consume.Metrics
	hist *ui.History // nil without the cockpit

	closeOnce sync.Once
	closeErr  error
	mu        sync.Mutex
	runErr    error
}

// MaxStatusSources bounds the sources Status lists (sources that applied
// something or were asked for first): the stream may carry any number of
// subjects, and 10,000 garbage ones made /v1/status 5 MB.
const MaxStatusSources = 100

// StoreDir is the store's directory inside the data directory.
const StoreDir = "store"

// New validates the options and opens the store; Run starts the work.
func New(opts ...Option) (*Receiver, error) {
	o := options{stream: wire.DefaultStream, prefix: wire.DefaultSubjectPrefix, readyLag: DefaultReadyLag, keepChanges: DefaultKeepChanges,
		keepAge: DefaultKeepAge, cacheSize: DefaultCacheSize, progress: DefaultProgressInterval, tombRetention: DefaultTombstoneRetention, cmdRetention: DefaultCommandRetention, log: slog.New(slog.DiscardHandler),
		cmdStream: command.DefaultStream, cmdPrefix: command.DefaultPrefix}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.nc == nil {
		return nil, fmt.Errorf("%w: a NATS connection is required (WithNATS)", ErrInvalidOption)
	}
	if o.dataDir == "" {
		return nil, fmt.Errorf("%w: a data directory is required (WithDataDir)", ErrInvalidOption)
	}
	if o.registry == nil {
		o.registry = prometheus.NewRegistry()
		o.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	dir := filepath.Join(o.dataDir, StoreDir)
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("receiver: creating data directory: %w", err)
	}
	sopts := []store.Option{store.WithCacheSize(o.cacheSize), store.WithSync(o.sync), store.WithLogger(o.log),
		store.WithTombstoneRetention(o.tombRetention), store.WithCommandRetention(o.cmdRetention)}
	if o.rebuild {
		// The store discards itself once it holds its lock: never under a
		// running receiver.
		o.log.Warn("rebuilding: discarding the store, it will be rebuilt from the start of the stream", "dir", dir)
		sopts = append(sopts, store.WithDiscard())
	}
	st, err := store.Open(dir, sopts...)
	if err != nil {
		return nil, err
	}
	r := &Receiver{o: o, log: o.log, st: st, reg: o.registry}
	if err := r.build(); err != nil {
		st.Close()
		return nil, err
	}
	return r, nil
}

func (r *Receiver) build() error {
	var err error
	if r.m, err = consume.NewMetrics(r.reg); err != nil {
		return err
	}
	if err := r.reg.Register(r.st.Collector()); err != nil {
		return fmt.Errorf("receiver: registering store metrics: %w", err)
	}
	if r.dec, err = wire.NewDecompressor(); err != nil {
		return err
	}
	r.ap = consume.NewApplier(r.st, r.dec, r.m, r.log, r.o.prefix)
	r.ap.SetStartMidChain(r.o.midChain)
	r.ap.SetMaxTxBytes(r.o.maxTxBytes)
	js, err := jetstream.New(r.o.nc)
	if err != nil {
		return fmt.Errorf("receiver: JetStream context: %w", err)
	}
	r.cons, err = consume.New(js, r.st, r.ap, consume.Config{Stream: r.o.stream, SubjectPrefix: r.o.prefix,
		Sources: r.o.sources, MaxBatchBytes: r.o.maxBatchBytes, Logger: r.log, Metrics: r.m})
	if err != nil {
		return err
	}
	if r.o.webhook != "" {
		r.hook, err = webhook.New(r.st, webhook.Config{URL: r.o.webhook, Token: r.o.webhookToken, Logger: r.log, Registerer: r.reg,
			ExcludeOrigins: r.o.excludeOrigins})
		if err != nil {
			return err
		}
	}
	r.h, err = api.New(api.Config{Store: r.st, Status: r.Status, Token: r.o.token, Logger: r.log, Registerer: r.reg,
		Metrics: promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}), ExcludeOrigins: r.o.excludeOrigins})
	if err != nil {
		return err
	}
	if r.o.origin != "" {
		pub, err := newPublisher(r.o.nc, r.o.cmdStream, r.o.cmdPrefix)
		if err != nil {
			return err
		}
		err = r.h.EnableCommands(api.CommandConfig{Store: r.st, Origin: r.o.origin, Tables: r.o.cmdTables, MaxImage: r.o.cmdMaxImage,
			Publisher: pub})
		if err != nil {
			return err
		}
	}
	if r.o.checkpointDir != "" {
		r.h.Handle("POST /v1/checkpoint", r.serveCheckpoint)
	}
	if !r.o.noUI {
		r.hist = ui.NewHistory(ui.DefaultInterval, ui.DefaultWindow)
		r.h.Handle("GET /ui/history", ui.HistoryHandler(r.hist))
		r.h.HandleOpen("GET /ui/", ui.Static("/ui/"))
	}
	return nil
}

// Handler returns the HTTP API (rows, changes, SSE, status, health,
// readiness, metrics).
func (r *Receiver) Handler() http.Handler { return r.h }

// Store returns the store, for embedding programs that read it directly.
func (r *Receiver) Store() *store.Store { return r.st }

// Registry returns the Prometheus registry holding the receiver's metrics.
func (r *Receiver) Registry() *prometheus.Registry { return r.reg }

// Positions returns every source's applied position.
func (r *Receiver) Positions() map[string]store.SourcePosition { return r.st.Positions() }

// Run consumes, trims the change log, delivers the webhook and (WithListen)
// serves the API until ctx is done or something fails for good (the store);
// then it closes the store. A Receiver runs once.
func (r *Receiver) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	fail := func(err error) {
		if err == nil {
			return
		}
		r.mu.Lock()
		if r.runErr == nil {
			r.runErr = err
		}
		r.mu.Unlock()
		cancel()
	}
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				fail(fmt.Errorf("receiver: %s: %w", name, err))
			}
		}()
	}
	if r.o.listen != "" {
		ln, err := net.Listen("tcp", r.o.listen)
		if err != nil {
			r.Close()
			return fmt.Errorf("receiver: listening on %s: %w (use another --http address)", r.o.listen, err)
		}
		r.log.Info("serving the API", "addr", ln.Addr().String())
		start("http", func(ctx context.Context) error { return r.serve(ctx, ln) })
	}
	start("consumer", r.cons.Run)
	start("trim", r.trimLoop)
	start("gauges", r.gaugeLoop)
	if r.hook != nil {
		start("webhook", r.hook.Run)
	}
	<-ctx.Done()
	r.mu.Lock()
	why := r.runErr
	r.mu.Unlock()
	if why == nil {
		why = context.Cause(ctx)
	}
	r.log.Info("receiver stopping", "why", why)
	if err := r.waitStopped(&wg); err != nil {
		return err
	}
	r.ap.Close()
	if err := r.Close(); err != nil {
		fail(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runErr
}

// stuckGrace is how long Run waits for its workers on a full disk before
// it gives up on a commit stuck in Pebble.
const stuckGrace = 10 * time.Second

// waitStopped waits for Run's workers. On a full disk a commit can be stuck
// in Pebble waiting for a flush that finds no space (store/diskfull.go):
// then, after stuckGrace, it returns an error instead of waiting for ever,
// and the store is left unclosed — without a WAL what it did not flush is
// re-read from the stream at the next start, as after a crash.
func (r *Receiver) waitStopped(wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var fullFor time.Duration
	for {
		select {
		case <-done:
			return nil
		case <-t.C:
		}
		e := r.st.DiskFull()
		if e == nil {
			fullFor = 0
			continue
		}
		if fullFor += time.Second; fullFor >= stuckGrace {
			r.log.Error("stopping on a full disk: a commit is stuck in the store; exiting without closing it (what it did not flush is re-read from the stream at the next start)", "err", e)
			return fmt.Errorf("receiver: stopped with the store's disk full, a commit stuck in Pebble (nothing is lost: what was not flushed is re-read from the stream at the next start): %w", e)
		}
	}
}

// Close closes the store; Run calls it on exit. Use it for a Receiver that
// was created but never run.
func (r *Receiver) Close() error {
	r.closeOnce.Do(func() {
		r.dec.Close()
		r.closeErr = r.st.Close()
	})
	return r.closeErr
}

func (r *Receiver) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: r.h, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx) // SSE streams end with the request context
	srv.Close()
	<-errc
	return nil
}

func (r *Receiver) trimLoop(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		floor := ^uint64(0)
		if r.hook != nil {
			floor = r.st.Webhook()
		}
		if n, err := r.st.Trim(r.o.keepChanges, r.o.keepAge, floor); err != nil {
			r.log.Warn("trimming the change log", "err", err)
		} else if n > 0 {
			r.log.Debug("trimmed the change log", "changes", n)
		}
	}
}

func (r *Receiver) gaugeLoop(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	progress := time.NewTicker(r.o.progress)
	defer progress.Stop()
	last := map[string]uint64{} // changes applied per source at the last progress line
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-progress.C:
			r.logProgress(r.Status(), last)
		case <-t.C:
			st := r.Status()
			r.setGauges(st)
			if r.hist != nil {
				r.hist.Record(time.Now(), st)
			}
		}
	}
}

// logProgress logs one info line per source: what it applied since the
// last line, where it is and how far behind, so that an operator sees a
// healthy receiver work (and a stuck one say so).
func (r *Receiver) logProgress(st Status, last map[string]uint64) {
	for _, s := range st.Sources {
		delta := s.Changes - last[s.Source]
		if s.Changes < last[s.Source] {
			delta = s.Changes
		}
		r.log.Info("applying", "source", s.Source, "state", s.State,
			"applied", format.Position{Segment: s.AppliedSegment, Offset: s.AppliedOffset}.String(),
			"changes", delta, "lag_seconds", s.LagSeconds, "pending", s.Pending, "interval", r.o.progress.String())
		last[s.Source] = s.Changes
	}
}

// setGauges refreshes the metrics computed from the status: once a second
// from gaugeLoop, so that reading the status (GET /v1/status, /readyz)
// changes nothing.
func (r *Receiver) setGauges(st Status) {
	for i := range st.Sources {
		if s := &st.Sources[i]; s.AliveAt != nil {
			r.m.Lag.WithLabelValues(s.Source).Set(s.LagSeconds)
		}
	}
}

// Status returns the receiver's status. It has no side effects.
func (r *Receiver) Status() Status {
	now := time.Now()
	first, last := r.st.ChangeRange()
	st := Status{Stream: r.o.stream, Consuming: r.cons.Running(), CaughtUp: r.cons.CaughtUp(),
		StreamSeq: r.st.Cursor().Seq, MessagesPending: r.cons.Pending(), FirstChangeID: first, LastChangeID: last}
	g := r.st.GuardStats()
	st.StaleChangesSkipped, st.UnversionedCrossSourceWrites, st.Tombstones = g.Stale, g.UnversionedCrossSource, g.Tombstones
	st.UnmatchedOutcomes = r.st.OutcomeStats().Unmatched
	parked, err := r.st.ParkedStats()
	if err != nil && st.Error == "" {
		st.Error = err.Error()
	}
	if r.o.origin != "" {
		cs := r.st.CommandStats()
		c := &api.CommandsStatus{Pending: cs.Pending, Applied: cs.Applied, Rejected: cs.Rejected,
			LatencyP50Seconds: cs.LatencyP50.Seconds(), LatencyP99Seconds: cs.LatencyP99.Seconds(), Recent: []api.RecentCommandJSON{}}
		if !cs.OldestPending.IsZero() {
			c.OldestPendingSeconds = max(now.Sub(cs.OldestPending).Seconds(), 0)
		}
		for _, rc := range cs.Recent {
			c.Recent = append(c.Recent, api.RecentCommandJSON{ID: rc.ID, State: rc.State, Table: rc.Table, Key: rc.Key, Error: rc.Reason,
				LatencySeconds: rc.Latency.Seconds()})
		}
		st.Commands = c
	}
	st.ParkedTransactions = parked.Count
	if !parked.Oldest.IsZero() {
		st.ParkedOldestAgeSeconds = max(now.Sub(parked.Oldest).Seconds(), 0)
	}
	if err := r.cons.LastError(); err != nil && !st.Consuming {
		st.Error = err.Error()
	}
	// A full disk comes first: it pauses every source.
	if e := r.st.DiskFull(); e != nil {
		st.DiskFull, st.Error = true, e.Error()
	} else if err := r.cons.DiskFull(); err != nil {
		st.DiskFull, st.Error = true, err.Error()
	}
	if r.hook != nil {
		w := r.st.Webhook()
		st.WebhookChangeID = &w
		if err := r.hook.LastError(); err != nil && st.Error == "" {
			st.Error = err.Error()
		}
	}
	pos := r.st.Positions()
	aps := r.ap.Status()
	names := map[string]bool{}
	for n := range pos {
		names[n] = true
	}
	for n := range aps {
		names[n] = true
	}
	for _, n := range r.o.sources {
		names[n] = true
	}
	reason := ""
	if st.DiskFull {
		reason = "the store's disk is full: applying is paused until space returns (" + st.Error + ")"
	}
	if !st.CaughtUp && reason == "" {
		reason = fmt.Sprintf("catching up with stream %s (%d messages pending)", r.o.stream, st.MessagesPending)
	}
	for n := range names {
		if len(r.o.sources) > 0 && !contains(r.o.sources, n) {
			continue
		}
		p, a := pos[n], aps[n]
		s := SourceStatus{Source: n, State: "ok", AppliedSegment: p.Segment, AppliedOffset: p.Offset,
			ShippedSegment: a.Shipped.Segment, ShippedOffset: a.Shipped.Offset, StreamSeq: p.StreamSeq,
			Transactions: p.Transactions, Changes: p.Changes, TornBytes: a.TornBytes, Parked: parked.BySource[n]}
		s.TailSegment, s.TailOffset, s.TailStreamSeq = a.Tail.Segment, a.Tail.Offset, a.TailSeq
		end := a.Shipped
		if end.Less(a.Tail) {
			end = a.Tail
		}
		switch {
		case end.Segment == p.Segment && end.Offset > p.Offset:
			s.BehindBytes = end.Offset - p.Offset
		case end.Segment > p.Segment:
			s.BehindBytes = -1
		}
		s.Pending = a.TailSeq > p.StreamSeq && (end.Segment > p.Segment || end.Offset > p.Offset)
		if p.LastCommit > 0 {
			t := time.Unix(0, p.LastCommit).UTC()
			s.LastCommitTime = &t
		}
		if p.AliveAt > 0 {
			t := time.Unix(0, p.AliveAt).UTC()
			s.AliveAt = &t
		}
		s.LagSeconds = a.LagSeconds(now, p)
		switch {
		case a.Err != nil:
			s.State, s.Error, s.ErrorKind = "stopped", a.Err.Error(), a.Err.Kind
			s.ErrorFile, s.ErrorOffset = format.SegmentName(n, a.Err.Segment), a.Err.Offset
			if reason == "" {
				reason = fmt.Sprintf("source %s stopped: %s", n, a.Err.Kind)
			}
		case p.Segment == 0:
			s.State = "waiting"
			if reason == "" {
				reason = fmt.Sprintf("source %s: nothing applied yet", n)
			}
		case s.LagSeconds > r.o.readyLag.Seconds():
			if reason == "" {
				reason = fmt.Sprintf("source %s lags %.1fs (ready under %s)", n, s.LagSeconds, r.o.readyLag)
			}
		}
		st.Sources = append(st.Sources, s)
	}
	// Sources that applied something or were asked for first, then the
	// others (never applied: waiting, or garbage on the stream's subjects),
	// by name; at most MaxStatusSources are listed.
	known := func(s *SourceStatus) bool { return s.AppliedSegment > 0 || contains(r.o.sources, s.Source) }
	sort.Slice(st.Sources, func(i, j int) bool {
		a, b := &st.Sources[i], &st.Sources[j]
		if ka, kb := known(a), known(b); ka != kb {
			return ka
		}
		return a.Source < b.Source
	})
	st.SourcesTotal = len(st.Sources)
	if len(st.Sources) > MaxStatusSources {
		st.SourcesOmitted = len(st.Sources) - MaxStatusSources
		st.Sources = st.Sources[:MaxStatusSources]
	}
	var lr string
	st.Loads, lr = r.loadStatus(now)
	if reason == "" {
		reason = lr
	}
	st.Ready, st.NotReadyReason = reason == "", reason
	if st.Sources == nil {
		st.Sources = []SourceStatus{}
	}
	return st
}

// loadStatus returns the initial loads' status, the latest load of each
// table, and why the gate waits for one (--wait-load), if it does.
func (r *Receiver) loadStatus(now time.Time) ([]LoadStatus, string) {
	latest := map[string]store.LoadState{}
	var tables []string
	for _, l := range r.st.Loads() { // by table, then first seq
		if _, ok := latest[l.Table]; !ok {
			tables = append(tables, l.Table)
		}
		latest[l.Table] = l
	}
	for _, t := range r.o.waitLoads {
		if _, ok := latest[t]; !ok {
			tables = append(tables, t)
		}
	}
	sort.Strings(tables)
	if len(tables) > MaxStatusSources {
		tables = tables[:MaxStatusSources]
	}
	out := make([]LoadStatus, 0, len(tables))
	reason := ""
	for _, t := range tables {
		l, ok := latest[t]
		s := LoadStatus{Table: t, State: "waiting", Wait: contains(r.o.waitLoads, t)}
		if ok {
			s = LoadStatus{Table: t, Load: l.ID, Source: store.LoadSourcePrefix + l.ID, State: l.State, Wait: s.Wait,
				Rows: l.Rows + l.Dropped, RowsEstimate: l.Estimate, RowsApplied: l.Rows, RowsDropped: l.Dropped, RowsIngested: l.Bulk,
				RowsSent: l.Sent, Chunk: l.Chunk, Part: l.Part, Error: l.Error}
			began, upd := time.Unix(0, l.Began).UTC(), time.Unix(0, l.Updated).UTC()
			s.StartedAt, s.UpdatedAt = &began, &upd
			end := upd
			if l.State == store.LoadLoading {
				end = now
			}
			if d := end.Sub(began).Seconds(); d > 0 {
				s.RowsPerSecond = float64(s.Rows) / d
			}
			if l.State == store.LoadLoading && s.RowsPerSecond > 0 && s.RowsEstimate > s.Rows {
				s.ETASeconds = float64(s.RowsEstimate-s.Rows) / s.RowsPerSecond
			}
		}
		if s.Wait && s.State != store.LoadDone && reason == "" {
			switch s.State {
			case "waiting":
				reason = fmt.Sprintf("initial load of table %s: not started (--wait-load)", t)
			case store.LoadFailed:
				reason = fmt.Sprintf("initial load %s of table %s failed: %s", s.Load, t, s.Error)
			default:
				reason = fmt.Sprintf("initial load %s of table %s: %d of ~%d rows", s.Load, t, s.Rows, s.RowsEstimate)
			}
		}
		out = append(out, s)
	}
	return out, reason
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Checkpoint writes a consistent copy of the store to dir (which must not
// exist). A receiver started with that directory as its store (DIR/store of
// its --data) catches up from the checkpoint's positions.
func (r *Receiver) Checkpoint(dir string) error { return r.st.Checkpoint(dir) }

func (r *Receiver) serveCheckpoint(w http.ResponseWriter, req *http.Request) {
	dir := filepath.Join(r.o.checkpointDir, "checkpoint-"+time.Now().UTC().Format("20060102T150405.000000000Z"))
	// JSON is built by encoding/json: Go's %q is not JSON's quoting (it
	// writes \x.. and \U........ escapes JSON does not have).
	reply := func(status int, v any) {
		b, _ := json.Marshal(v)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(append(b, '\n'))
	}
	if err := os.MkdirAll(r.o.checkpointDir, 0o755); err != nil {
		r.log.Error("checkpoint failed", "dir", r.o.checkpointDir, "err", err)
		reply(http.StatusInternalServerError, map[string]string{"error": "creating the checkpoint directory: " + err.Error(), "code": "internal"})
		return
	}
	if err := r.Checkpoint(dir); err != nil {
		r.log.Error("checkpoint failed", "dir", dir, "err", err)
		reply(http.StatusInternalServerError, map[string]string{"error": err.Error(), "code": "internal"})
		return
	}
	reply(http.StatusOK, map[string]string{"checkpoint": dir, "store_dir_name": StoreDir})
}
