package inbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures an Agent.
type Config struct {
	// Source is the legacy source whose commands the agent delivers.
	Source string
	// ChangeDir holds the source's change files, where outcomes appear.
	ChangeDir string
	// Dir is the inbox directory (created if missing).
	Dir string
	// Stream and Prefix name the commands stream and its subject prefix
	// (defaults command.DefaultStream, command.DefaultPrefix).
	Stream, Prefix string
	// Consumer is the durable consumer's name (default ferry-inbox-<source>).
	Consumer string
	// Endpoint, if set, also receives every inbox file as an HTTP POST
	// (Content-Type application/x-ndjson, the file's lines), again every
	// Redeliver until the commands' outcomes are in the change files.
	Endpoint string
	// Redeliver is how long a command may wait for its outcome before the
	// endpoint is called again (default 10 s).
	Redeliver time.Duration
	// Batch bounds the commands of one inbox file (default 1000).
	Batch int
	// Poll is how often the change files are read for outcomes while
	// commands wait (default 20 ms).
	Poll time.Duration
	// AckWait is how long the commands stream waits for the agent to
	// acknowledge a command before it offers it again (default 5 s): a
	// delivery lost with a killed agent or a dropped connection comes back
	// after it. A command offered again that is already in the inbox or
	// done is dropped, so a short wait costs nothing but a duplicate.
	AckWait time.Duration
	// RescanBack is how far back (in time, this to twice this) a restarted
	// agent reads the change files again to know the ids of commands done
	// lately (default DefaultRescanBack, 10 min). A command delivered again
	// after that (a long outage, a service resubmitting it days later) is
	// handed to the legacy, which writes its outcome again (SPEC.md
	// section 23): nothing is carried out twice either way; a longer
	// horizon only saves the legacy those repeats. Tests shorten it.
	RescanBack time.Duration
	Client     *http.Client
	Logger     *slog.Logger
}

// Agent delivers a source's commands to the legacy. Run it once.
type Agent struct {
	cfg Config
	js  jetstream.JetStream
	log *slog.Logger
	sc  *scanner

	// pending: commands in inbox files without an outcome yet, by id, and
	// per file the ids still waiting.
	pending  map[string]string // id -> file name
	files    map[string]*pendingFile
	done     recentSet
	lastSave time.Time

	mu    sync.Mutex
	stats Stats
}

type pendingFile struct {
	path    string
	waiting int
	posted  time.Time // last POST to the endpoint (zero: never)
}

// Stats is what the agent did so far.
type Stats struct {
	Delivered  uint64 // commands written to the inbox
	Duplicates uint64 // commands dropped as already in the inbox or done
	Outcomes   uint64 // commands whose outcome was found
	Pending    int    // commands in the inbox without an outcome
	Files      int    // inbox files
	Posts      uint64 // endpoint calls that succeeded
	PostErrors uint64
	Scanned    format.Position // how far the change files were read
	// RescanFrom is where a restarted agent would read the change files
	// again from (Config.RescanBack behind, or more; zero: from the first
	// segment): outcomes before it are forgotten at a restart.
	RescanFrom format.Position
	LastError  string
}

// New returns an Agent reading the commands stream through js.
func New(js jetstream.JetStream, cfg Config) (*Agent, error) {
	if !format.ValidSource(cfg.Source) {
		return nil, fmt.Errorf("inbox: source %q: want 1-%d of [A-Za-z0-9_-]", cfg.Source, format.MaxSourceLen)
	}
	if cfg.ChangeDir == "" || cfg.Dir == "" {
		return nil, errors.New("inbox: the change files directory and the inbox directory are required")
	}
	if cfg.Stream == "" {
		cfg.Stream = command.DefaultStream
	}
	if cfg.Prefix == "" {
		cfg.Prefix = command.DefaultPrefix
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "ferry-inbox-" + cfg.Source
	}
	if cfg.Redeliver <= 0 {
		cfg.Redeliver = 10 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 20 * time.Millisecond
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 5 * time.Second
	}
	if cfg.RescanBack < 0 {
		return nil, fmt.Errorf("inbox: rescan horizon %v is negative (use 0 for the default, %v)", cfg.RescanBack, DefaultRescanBack)
	}
	if cfg.RescanBack == 0 {
		cfg.RescanBack = DefaultRescanBack
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("inbox: creating %s: %w", cfg.Dir, err)
	}
	sc, err := newScanner(cfg.ChangeDir, cfg.Source, cfg.Dir, cfg.RescanBack)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, js: js, log: cfg.Logger, sc: sc, pending: map[string]string{},
		files: map[string]*pendingFile{}, done: newRecentSet(1 << 16)}, nil
}

// Stats returns what the agent did so far. Safe for concurrent use.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// Run delivers commands until ctx is done. One loop does everything, in
// this order: write a fetched batch to the inbox, acknowledge it (waiting
// for the server), read the change files for outcomes and forget what has
// one. So a command whose outcome was seen was acknowledged before, and is
// never delivered again by the stream.
func (a *Agent) Run(ctx context.Context) error {
	if err := removeTemps(a.cfg.Dir); err != nil {
		return err
	}
	if err := a.loadInbox(); err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := a.session(ctx)
		if ctx.Err() != nil {
			break
		}
		a.setErr(err)
		a.log.Warn("inbox agent: retrying", "source", a.cfg.Source, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	defer a.sc.close()
	return a.sc.save()
}

func (a *Agent) setErr(err error) {
	a.mu.Lock()
	if err != nil {
		a.stats.LastError = err.Error()
	} else {
		a.stats.LastError = ""
	}
	a.mu.Unlock()
}

// loadInbox finds the commands already in the inbox (a restart): they wait
// for their outcomes like new ones.
func (a *Agent) loadInbox() error {
	files, err := List(a.cfg.Dir)
	if err != nil {
		return err
	}
	for _, f := range files {
		cmds, err := ReadFile(f.Path)
		if err != nil {
			return err
		}
		a.track(f, cmds)
	}
	a.updateStats()
	return nil
}

func (a *Agent) track(f File, cmds []command.Command) {
	pf := &pendingFile{path: f.Path}
	for i := range cmds {
		if _, ok := a.pending[cmds[i].ID]; !ok {
			a.pending[cmds[i].ID] = f.Name
			pf.waiting++
		}
	}
	a.files[f.Name] = pf
}

func (a *Agent) session(ctx context.Context) error {
	if _, err := command.EnsureStream(ctx, a.js, a.cfg.Stream, a.cfg.Prefix); err != nil {
		return err
	}
	cons, err := a.js.CreateOrUpdateConsumer(ctx, a.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       a.cfg.Consumer,
		FilterSubject: command.Subject(a.cfg.Prefix, a.cfg.Source),
		// Explicit, not AckAll: a delivery the agent never received (it
		// was killed, or its connection dropped, after the server sent
		// it) is acknowledged by nothing else, and comes back after
		// AckWait. With AckAll the next batch's acknowledgement covered it
		// and the command was lost (TestFaultWriteBackKill9).
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       a.cfg.AckWait,
		MaxAckPending: 4 * a.cfg.Batch,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("inbox: consumer %s on %s: %w", a.cfg.Consumer, a.cfg.Stream, err)
	}
	// Outcomes already in the change files first (a restart).
	if err := a.outcomes(); err != nil {
		return err
	}
	for ctx.Err() == nil {
		wait := time.Second
		if len(a.pending) > 0 {
			wait = a.cfg.Poll
		}
		msgs, err := a.fetch(cons, wait)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(msgs) > 0 {
			if err := a.deliver(ctx, msgs); err != nil {
				return err
			}
		}
		if err := a.outcomes(); err != nil {
			return err
		}
		a.post(ctx)
		a.setErr(nil)
	}
	return nil
}

// fetch waits up to wait for the next command, then takes the commands
// already waiting behind it (up to Batch in all) without waiting more: a
// command reaches the inbox as soon as it is in the stream, and a burst
// shares one file. (A plain Fetch of Batch returns only when the batch is
// full or its wait expired: every command would wait the whole poll.)
func (a *Agent) fetch(cons jetstream.Consumer, wait time.Duration) ([]jetstream.Msg, error) {
	first, err := cons.Next(jetstream.FetchMaxWait(wait))
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: fetching commands: %w", err)
	}
	msgs := []jetstream.Msg{first}
	if a.cfg.Batch > 1 {
		batch, err := cons.FetchNoWait(a.cfg.Batch - 1)
		if err != nil {
			return msgs, nil // the first one goes alone; the rest next time
		}
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
	}
	return msgs, nil
}

// deliver writes one inbox file for msgs (those not already delivered),
// then acknowledges them all.
func (a *Agent) deliver(ctx context.Context, msgs []jetstream.Msg) error {
	cmds := make([]command.Command, 0, len(msgs))
	seen := make(map[string]bool, len(msgs))
	dups := 0
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("inbox: message metadata: %w", err)
		}
		c, err := command.Unmarshal(m.Data(), 0)
		if err != nil {
			// Receivers validate what they publish: this message was not
			// published by one. It is dropped, loudly.
			a.log.Error("inbox agent: dropping a message that is not a valid command", "stream_seq", md.Sequence.Stream, "err", err)
			continue
		}
		if c.Source != a.cfg.Source {
			a.log.Error("inbox agent: dropping a command for another source", "command", c.ID, "source", c.Source)
			continue
		}
		_, inInbox := a.pending[c.ID]
		if inInbox || seen[c.ID] || a.done.has(c.ID) {
			dups++
			continue
		}
		seen[c.ID] = true
		c.Seq = md.Sequence.Stream
		cmds = append(cmds, c)
	}
	if len(cmds) > 0 {
		path, err := writeFile(a.cfg.Dir, cmds)
		if err != nil {
			return err
		}
		name := FileName(cmds[0].Seq)
		a.track(File{Name: name, Seq: cmds[0].Seq, Path: path}, cmds)
		if a.cfg.Endpoint != "" {
			a.postFile(ctx, a.files[name])
		}
	}
	// Every message is acknowledged; the server handles a connection's
	// acknowledgements in order, so once it confirmed the last one it
	// has them all.
	for _, m := range msgs[:len(msgs)-1] {
		if err := m.Ack(); err != nil {
			return fmt.Errorf("inbox: acknowledging commands: %w", err)
		}
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil {
		return fmt.Errorf("inbox: acknowledging commands: %w", err)
	}
	a.mu.Lock()
	a.stats.Delivered += uint64(len(cmds))
	a.stats.Duplicates += uint64(dups)
	a.mu.Unlock()
	a.updateStats()
	return nil
}

// outcomes reads new outcomes from the change files and removes the inbox
// files whose commands all have one.
func (a *Agent) outcomes() error {
	n := 0
	emptied := false
	err := a.sc.scan(func(id string) {
		a.done.add(id)
		name, ok := a.pending[id]
		if !ok {
			return
		}
		delete(a.pending, id)
		n++
		if pf := a.files[name]; pf != nil {
			pf.waiting--
			if pf.waiting <= 0 {
				emptied = true
			}
		}
	})
	if err != nil {
		return err
	}
	if emptied {
		for name, pf := range a.files {
			if pf.waiting > 0 {
				continue
			}
			if err := os.Remove(pf.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("inbox: removing %s: %w", pf.path, err)
			}
			delete(a.files, name)
		}
		if err := syncDir(a.cfg.Dir); err != nil {
			return err
		}
	}
	// The state is saved after the removals: a crash before it re-reads
	// these outcomes, and finds the files gone or removes them again. It
	// only saves reading the change files again after a restart (which
	// starts from the rescan point, Config.RescanBack behind, anyway), so
	// it is saved at most once a second: not after every heartbeat the
	// legacy writes nor every inbox file emptied (each save is two fsyncs
	// and a rename; once per file was 2% of the write-back path's CPU).
	if time.Since(a.lastSave) >= time.Second {
		if err := a.sc.save(); err != nil {
			return err
		}
		a.lastSave = time.Now()
	}
	a.mu.Lock()
	a.stats.Outcomes += uint64(n)
	a.mu.Unlock()
	a.updateStats()
	return nil
}

func (a *Agent) updateStats() {
	a.mu.Lock()
	a.stats.Pending, a.stats.Files, a.stats.Scanned, a.stats.RescanFrom = len(a.pending), len(a.files), a.sc.position(), a.sc.rescanFrom()
	a.mu.Unlock()
}

// post calls the endpoint again for files whose commands waited longer
// than Redeliver.
func (a *Agent) post(ctx context.Context) {
	if a.cfg.Endpoint == "" {
		return
	}
	now := time.Now()
	for _, pf := range a.files {
		if pf.waiting > 0 && now.Sub(pf.posted) >= a.cfg.Redeliver {
			a.postFile(ctx, pf)
		}
	}
}

func (a *Agent) postFile(ctx context.Context, pf *pendingFile) {
	pf.posted = time.Now()
	body, err := os.ReadFile(pf.path)
	if err == nil {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Endpoint, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-ndjson")
			var resp *http.Response
			if resp, err = a.cfg.Client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.stats.PostErrors++
		a.log.Warn("inbox agent: the legacy endpoint did not take commands; retrying later", "file", pf.path, "endpoint", a.cfg.Endpoint, "err", err)
		return
	}
	a.stats.Posts++
}

// recentSet remembers the last n ids added: commands whose outcome was
// seen, so that a late duplicate is not delivered again.
type recentSet struct {
	m    map[string]struct{}
	ring []string
	next int
}

func newRecentSet(n int) recentSet {
	return recentSet{m: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (s *recentSet) has(id string) bool { _, ok := s.m[id]; return ok }

func (s *recentSet) add(id string) {
	if s.has(id) {
		return
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.m, old)
	}
	s.ring[s.next] = id
	s.m[id] = struct{}{}
	s.next = (s.next + 1) % len(s.ring)
}
