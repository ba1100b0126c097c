package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
)

// Group ships several sources over one NATS connection, as `ferry ship`
// does: it creates or checks the stream (retrying while JetStream is
// unreachable: a shipper outlives outages, also at start), then runs one
// Shipper per source. A source that stops on an error is logged and
// reported by Health while the others go on.
type Group struct {
	nc      *nats.Conn
	cfg     jsclient.Config
	sources []SourceConfig
	opts    []Option
	log     *slog.Logger
	every   time.Duration // progress log interval

	mu       sync.Mutex
	shipping int               // sources started (0 while connecting)
	failed   map[string]string // source → the error it stopped on
	ships    []*Shipper
}

// DefaultProgressInterval is how often a Group logs, at info level, what
// each source shipped since the last time.
const DefaultProgressInterval = 30 * time.Second

// WithProgressInterval sets how often a Group logs its progress line
// (default DefaultProgressInterval; a Shipper alone ignores it).
func WithProgressInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: progress interval %v must be positive", ErrInvalidOption, d)
		}
		o.progress = d
		return nil
	}
}

// Stream-creation retry pacing of Group.Run.
const (
	streamRetryFirst = 500 * time.Millisecond
	streamRetryMax   = 10 * time.Second
	streamTimeout    = 10 * time.Second
)

// NewGroup returns a Group of sources shipping to the stream cfg names over
// nc, each Shipper built with opts. It validates the options and the
// sources' names and directories before anything connects.
func NewGroup(nc *nats.Conn, cfg jsclient.Config, sources []SourceConfig, opts ...Option) (*Group, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrInvalidOption)
	}
	if len(sources) == 0 {
		return nil, fmt.Errorf("%w: no source to ship", ErrInvalidOption)
	}
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, sc := range sources {
		if seen[sc.Name] {
			return nil, fmt.Errorf("%w: source %q given twice: one shipper per source", ErrInvalidOption, sc.Name)
		}
		seen[sc.Name] = true
		if err := checkSource(sc.Dir, sc.Name); err != nil {
			return nil, fmt.Errorf("source %s: %w", sc.Name, err)
		}
	}
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := o.progress
	if every == 0 {
		every = DefaultProgressInterval
	}
	return &Group{nc: nc, cfg: cfg, sources: sources, opts: opts, log: log, every: every, failed: map[string]string{}}, nil
}

// Run ships every source until ctx ends (each Shipper then drains what is
// in flight) and returns nil, or an error naming the sources that stopped
// on errors. An incompatible stream is an error at once; ctx ending while
// JetStream is still unreachable is not an error.
func (g *Group) Run(ctx context.Context) error {
	client, err := g.connectStream(ctx)
	if err != nil || client == nil {
		return err
	}
	var ships []*Shipper
	for _, sc := range g.sources {
		s, err := New(client, sc.Dir, sc.Name, g.opts...)
		if err != nil {
			return fmt.Errorf("source %s: %w", sc.Name, err)
		}
		ships = append(ships, s)
	}
	g.mu.Lock()
	g.shipping, g.ships = len(ships), ships
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range ships {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil {
				g.log.Error("source stopped; the others go on", "source", s.Source(), "err", err)
				g.fail(s.Source(), err)
			}
		}()
	}
	pctx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		g.progress(pctx, ships)
	}()
	wg.Wait()
	stopProgress()
	<-progressDone
	if failed := g.failures(); len(failed) > 0 {
		return fmt.Errorf("%d of %d sources stopped on errors: %s", len(failed), len(ships), strings.Join(failed, "; "))
	}
	return nil
}

// connectStream creates or checks the stream, retrying while NATS is
// unreachable. It returns nil, nil if ctx ends first.
func (g *Group) connectStream(ctx context.Context) (*jsclient.Client, error) {
	for wait := streamRetryFirst; ; wait = min(2*wait, streamRetryMax) {
		cctx, cancel := context.WithTimeout(ctx, streamTimeout)
		client, err := jsclient.New(cctx, g.nc, g.cfg)
		cancel()
		if err == nil {
			return client, nil
		}
		if errors.Is(err, jsclient.ErrIncompatible) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		g.log.Warn("JetStream not reachable yet; retrying", "err", err, "nats_status", g.nc.Status().String(), "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(wait):
		}
	}
}

// progress logs, every g.every until ctx ends, one info line per source:
// what it shipped since the last line and how far JetStream acknowledged
// it, so that an operator sees a healthy shipper work.
func (g *Group) progress(ctx context.Context, ships []*Shipper) {
	t := time.NewTicker(g.every)
	defer t.Stop()
	last := make([]Stats, len(ships))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i, s := range ships {
			st := s.Stats()
			g.log.Info("shipping", "source", s.Source(), "acked", st.Acked.String(),
				"changes", st.Changes-last[i].Changes, "bytes", st.RawBytes-last[i].RawBytes,
				"messages", st.Batches-last[i].Batches, "interval", g.every.String())
			last[i] = st
		}
	}
}

// Shippers returns the sources' Shippers once Run has started them (nil
// before), for their figures.
func (g *Group) Shippers() []*Shipper {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ships
}

func (g *Group) fail(source string, err error) {
	g.mu.Lock()
	g.failed[source] = err.Error()
	g.mu.Unlock()
}

func (g *Group) failures() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.failed))
	for s, e := range g.failed {
		out = append(out, s+": "+e)
	}
	sort.Strings(out)
	return out
}

// Health says whether every source ships: ok is false while the stream is
// being connected and once a source stopped; text says which and why.
func (g *Group) Health() (ok bool, text string) {
	g.mu.Lock()
	n := g.shipping
	g.mu.Unlock()
	failed := g.failures()
	switch {
	case n == 0:
		return false, "starting: connecting to JetStream"
	case len(failed) > 0:
		return false, "stopped sources:\n" + strings.Join(failed, "\n")
	}
	text = fmt.Sprintf("ok: %d sources shipping", n)
	g.mu.Lock()
	ships := g.ships
	g.mu.Unlock()
	for _, sh := range ships {
		// Shipping, but waiting at a partial frame for a while: say so
		// (not a failure: a writer that restarts moves the source on).
		if st := sh.Stats(); st.PartialBytes > 0 {
			text += fmt.Sprintf("\n%s: waiting at a partial frame of %d bytes at %s (a writer that crashed and has not restarted?)", sh.Source(), st.PartialBytes, st.Partial)
		}
	}
	return true, text
}

// ServeHealth answers a health probe (/healthz): 200 while every source
// ships, 503 naming the sources that stopped.
func (g *Group) ServeHealth(w http.ResponseWriter, _ *http.Request) {
	ok, text := g.Health()
	if !ok {
		http.Error(w, text, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, text)
}
