// Package consume reads a Ferry stream from NATS JetStream and applies it to
// a receiver's store exactly once, in source order.
//
// The receiver owns its offset. It reads with an ordered consumer (ephemeral,
// no acks, flow-controlled by the server, recreated by the client from the
// last stream sequence after any hiccup) starting after the stream sequence
// recorded in the store with the data, so nothing on the server has to be
// cleaned up or kept in step with the store, and any number of receivers can
// read one stream. Stream sequences only decide where to start reading:
// whether a frame is applied is decided by the source's applied position
// (segment, offset), committed in the same Pebble batch as the frame. If the
// stream's sequences went backwards (the stream was recreated, or a broker
// lost acknowledged messages) the consumer rescans the stream from its start
// and the positions skip what was applied.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Consumer.
type Config struct {
	// Stream is the JetStream stream name (default wire.DefaultStream).
	Stream string
	// SubjectPrefix is the subject prefix (default wire.DefaultSubjectPrefix): source S
	// publishes on <prefix>.<S>.
	SubjectPrefix string
	// Sources restricts consumption to these sources (default: all).
	Sources []string
	// MaxBatchBytes commits a store batch once it holds this much (default
	// 8 MiB); a batch is also committed whenever no message is waiting.
	// Two are in memory while catching up (one filling, one committing):
	// 16 MiB batches applied no faster (BenchmarkReceiveProcess) and raised
	// the receiver's memory high-water by ~40 MiB.
	MaxBatchBytes int
	// PullMaxBytes bounds the bytes the client buffers (default 16 MiB).
	PullMaxBytes int
	// CheckInterval is how often the stream is checked for sequences going
	// backwards (default 2 s).
	CheckInterval time.Duration
	Logger        *slog.Logger
	Metrics       *Metrics
}

// Consumer consumes a stream into a store.
type Consumer struct {
	js  jetstream.JetStream
	st  *store.Store
	ap  *Applier
	cfg Config
	log *slog.Logger
	m   *Metrics

	pending  atomic.Int64 // messages not yet delivered, from the last message's metadata
	caughtUp atomic.Bool  // delivered everything the stream held at least once since start
	running  atomic.Bool
	lastErr  atomic.Pointer[error]
	full     atomic.Pointer[error] // the full-disk error applying waits out (nil: none)
}

// New returns a Consumer reading js into st, decompressing with ap's
// decompressor.
func New(js jetstream.JetStream, st *store.Store, ap *Applier, cfg Config) (*Consumer, error) {
	if cfg.Stream == "" {
		cfg.Stream = wire.DefaultStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = wire.DefaultSubjectPrefix
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 8 << 20
	}
	if cfg.PullMaxBytes <= 0 {
		cfg.PullMaxBytes = 16 << 20
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		return nil, errors.New("consume: Config.Metrics is required")
	}
	ap.SetRescanOnGap(true) // a gap may be a broker's loss, refilled: read again (handle)
	return &Consumer{js: js, st: st, ap: ap, cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// Pending returns the number of stream messages not yet delivered.
func (c *Consumer) Pending() int64 { return c.pending.Load() }

// CaughtUp reports whether the consumer has read everything the stream held
// at some point since it started (the precondition for readiness).
func (c *Consumer) CaughtUp() bool { return c.caughtUp.Load() }

// Running reports whether the consumer is connected and reading.
func (c *Consumer) Running() bool { return c.running.Load() }

// LastError returns the last error that interrupted reading, if any.
func (c *Consumer) LastError() error {
	if p := c.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Consumer) subjects() []string {
	if len(c.cfg.Sources) == 0 {
		return []string{c.cfg.SubjectPrefix + ".>"}
	}
	out := make([]string, len(c.cfg.Sources), len(c.cfg.Sources)+1)
	for i, s := range c.cfg.Sources {
		out[i] = c.cfg.SubjectPrefix + "." + s
	}
	// Initial loads come on their own subjects, whatever the sources.
	return append(out, load.SubjectFilter(c.cfg.SubjectPrefix))
}

// errRescan asks Run to read the stream again from its start.
var errRescan = errors.New("consume: stream sequences went backwards")

// Run consumes until ctx is done, reconnecting with backoff on errors. It
// returns nil when ctx ends, or an error if the store fails.
func (c *Consumer) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := c.runOnce(ctx)
		c.running.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		var se *storeError
		if errors.As(err, &se) && store.IsDiskFull(se.err) {
			if !c.waitForSpace(ctx, se.err) {
				return nil
			}
			backoff = 100 * time.Millisecond
			continue
		}
		if errors.As(err, &se) {
			return se.err
		}
		if errors.Is(err, errRescan) {
			backoff = 100 * time.Millisecond
			continue
		}
		if err != nil {
			c.lastErr.Store(&err)
			c.log.Warn("stream consumer interrupted; retrying", "err", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// waitForSpace handles a commit that failed for want of space: the failed
// batch is dropped, and once the store has space again (checked every
// second; reads are served meanwhile) the stream is read again from the
// store's cursor. It returns false if ctx ended first.
func (c *Consumer) waitForSpace(ctx context.Context, err error) bool {
	cur := c.ap.Recover()
	c.full.Store(&err)
	defer c.full.Store(nil)
	c.log.Error("the receiver's disk is full: applying is paused (reads are still served); it resumes by itself once space returns: free space on the file system of --data",
		"dir", c.st.Dir(), "cursor_seq", cur.Seq, "err", err)
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if c.st.SpaceAvailable() {
			c.log.Info("the receiver's disk has space again: applying resumes from the store's cursor", "dir", c.st.Dir(),
				"cursor_seq", cur.Seq, "paused", time.Since(start).Round(time.Second).String())
			return true
		}
	}
}

// DiskFull returns the full-disk error that paused applying (nil: not
// paused).
func (c *Consumer) DiskFull() error {
	if p := c.full.Load(); p != nil {
		return *p
	}
	return nil
}

type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }

func (c *Consumer) runOnce(ctx context.Context) error {
	stream, err := c.js.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return fmt.Errorf("consume: looking up stream %q: %w (the shipper creates it; check --stream and the NATS account)", c.cfg.Stream, err)
	}
	info := stream.CachedInfo()
	cur := c.st.Cursor()
	created := info.Created.UnixNano()
	switch {
	case cur.Created != 0 && cur.Created != created:
		c.log.Warn("stream was recreated since the last run; rescanning it from the start (applied positions skip what is already applied)",
			"stream", c.cfg.Stream, "cursor_seq", cur.Seq)
		cur = c.rescan(created)
	case cur.Seq > info.State.LastSeq:
		c.log.Warn("stream's last sequence is behind the receiver's cursor (broker lost data?); rescanning from the start",
			"stream", c.cfg.Stream, "cursor_seq", cur.Seq, "stream_last_seq", info.State.LastSeq)
		cur = c.rescan(created)
	case cur.CheckSeq > 0 && cur.CheckSeq <= info.State.LastSeq && !c.holds(ctx, stream, cur.CheckSeq, cur.CheckID):
		c.log.Warn("the stream holds another message at the sequence this receiver last handled (a broker restored from an older image and refilled past it?); rescanning from the start (applied positions skip what is already applied)",
			"stream", c.cfg.Stream, "seq", cur.CheckSeq, "was", cur.CheckID)
		cur = c.rescan(created)
	case cur.Created == 0:
		cur.Created = created
		c.ap.Reset(cur)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: c.subjects(),
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    cur.Seq + 1,
	})
	if err != nil {
		return fmt.Errorf("consume: creating an ordered consumer on %q from sequence %d: %w", c.cfg.Stream, cur.Seq+1, err)
	}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		c.pending.Store(0)
		c.caughtUp.Store(true)
	} else if ci != nil {
		c.pending.Store(int64(ci.NumPending))
		c.m.Pending.Set(float64(ci.NumPending))
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(c.cfg.PullMaxBytes))
	if err != nil {
		return fmt.Errorf("consume: reading stream %q: %w", c.cfg.Stream, err)
	}
	c.running.Store(true)
	c.log.Info("consuming stream", "stream", c.cfg.Stream, "from_seq", cur.Seq+1, "subjects", c.subjects())

	msgs := make(chan jetstream.Msg, 64)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					errc <- fmt.Errorf("consume: reading stream %q: %w", c.cfg.Stream, err)
				}
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		it.Stop()
		for range msgs { // let the reader exit
		}
		wg.Wait()
	}()

	// Tails are polled beside the loop, never on it: one request per
	// source would delay applying by as many round trips.
	tctx, tcancel := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.tailLoop(tctx, stream)
	}()
	defer tcancel() // runs before the wait above

	check := time.NewTicker(c.cfg.CheckInterval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := c.ap.Commit(); err != nil {
				return &storeError{err}
			}
			return nil
		case err := <-errc:
			if cerr := c.ap.Commit(); cerr != nil {
				return &storeError{cerr}
			}
			return err
		case <-check.C:
			// A commit still in flight ends here, its error reported.
			if err := c.ap.Commit(); err != nil {
				return &storeError{err}
			}
			if err := c.checkStream(ctx, stream); err != nil {
				return err
			}
		case m, ok := <-msgs:
			if !ok {
				if cerr := c.ap.Commit(); cerr != nil {
					return &storeError{cerr}
				}
				return fmt.Errorf("consume: stream %q: message iterator stopped", c.cfg.Stream)
			}
			if err := c.handle(m); err != nil {
				return err
			}
			// Drain what is already buffered into the same batch.
			for drained := false; !drained; {
				if b, _ := c.ap.Pending(); b >= c.cfg.MaxBatchBytes {
					break
				}
				select {
				case m, ok := <-msgs:
					if !ok {
						drained = true
						break
					}
					if err := c.handle(m); err != nil {
						return err
					}
				default:
					drained = true
				}
			}
			// Catching up, the commit overlaps decoding the next
			// messages; with nothing more in the stream it completes
			// before the next wait, so what was read is visible at once.
			if c.pending.Load() > 0 {
				if err := c.ap.CommitAsync(); err != nil {
					return &storeError{err}
				}
				continue
			}
			if err := c.ap.Commit(); err != nil {
				return &storeError{err}
			}
			c.caughtUp.Store(true)
		}
	}
}

func (c *Consumer) handle(m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("consume: message without JetStream metadata on %q: %w", m.Subject(), err)
	}
	c.pending.Store(int64(md.NumPending))
	c.m.Pending.Set(float64(md.NumPending))
	if err := c.ap.Handle(Message{Subject: m.Subject(), Header: m.Headers(), Body: m.Data(), StreamSeq: md.Sequence.Stream}); err != nil {
		return &storeError{err}
	}
	if e := c.ap.RescanWanted(); e != nil {
		// What came before the gap is applied; the cursor at the stream's
		// start is committed too, so that a restart reads it all again.
		if err := c.ap.Commit(); err != nil {
			return &storeError{err}
		}
		c.log.Warn("a message does not continue its source: reading the stream again from its start, once for this position (the broker may have lost messages it had acknowledged and given their sequence numbers to new ones; what is applied is skipped by position)",
			"stream", c.cfg.Stream, "source", e.Source, "applied_segment", e.AppliedSegment, "applied_offset", e.AppliedOffset,
			"stream_seq", e.StreamSeq, "err", e.Err)
		c.rescan(c.ap.created)
		if err := c.ap.Commit(); err != nil {
			return &storeError{err}
		}
		return errRescan
	}
	return nil
}

// checkStream detects a stream whose sequences went backwards under a
// running consumer.
func (c *Consumer) checkStream(ctx context.Context, stream jetstream.Stream) error {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := stream.Info(ictx)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("consume: stream %q disappeared: %w", c.cfg.Stream, err)
		}
		c.log.Debug("stream info failed", "err", err)
		return nil
	}
	created := info.Created.UnixNano()
	seq, id := c.ap.LastHandled()
	if created != c.ap.created || info.State.LastSeq < c.ap.lastSeq || (id != "" && seq > 0 && !c.holds(ictx, stream, seq, id)) {
		if err := c.ap.Commit(); err != nil {
			return &storeError{err}
		}
		c.log.Warn("stream sequences went backwards under the consumer; rescanning from the start",
			"stream", c.cfg.Stream, "seen_seq", c.ap.lastSeq, "stream_last_seq", info.State.LastSeq)
		c.rescan(created)
		return errRescan
	}
	return nil
}

// maxTailPolls bounds the sources whose tail is polled per CheckInterval:
// the stream may carry any number of subjects (10,000 garbage ones made one
// request each per poll), so the cost of polling is bounded, and sources
// beyond it are polled in turn over the following intervals.
const maxTailPolls = 64

// tailLoop polls sources' tails every CheckInterval until ctx ends.
func (c *Consumer) tailLoop(ctx context.Context, stream jetstream.Stream) {
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	var next int // round-robin position in the sorted source list
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next = c.pollTails(ctx, stream, next)
	}
}

// pollTails reads the last message in the stream of up to maxTailPolls
// sources (its headers say where it ends), so that status can say how far
// behind the receiver is even while it is not reading. Sources named by
// --source and sources with something applied come first, every time;
// others (never applied: waiting, or garbage) share what is left, in turn
// from next. It returns where the next poll continues.
func (c *Consumer) pollTails(ctx context.Context, stream jetstream.Stream, next int) int {
	known := map[string]bool{}
	for _, s := range c.cfg.Sources {
		known[s] = true
	}
	for s := range c.st.Positions() {
		if len(c.cfg.Sources) == 0 || slices.Contains(c.cfg.Sources, s) {
			known[s] = true
		}
	}
	var first, others []string
	for s := range known {
		first = append(first, s)
	}
	if len(c.cfg.Sources) == 0 {
		for s := range c.ap.Status() {
			if !known[s] {
				others = append(others, s)
			}
		}
	}
	slices.Sort(first)
	slices.Sort(others)
	if len(first) > maxTailPolls {
		// More applied sources than a poll covers: take them in turn too.
		others = append(first, others...)
		first = nil
	}
	todo := first
	if n := min(maxTailPolls-len(first), len(others)); n > 0 {
		next %= len(others)
		for i := 0; i < n; i++ {
			todo = append(todo, others[(next+i)%len(others)])
		}
		next += n
	}
	for _, s := range todo {
		if ctx.Err() != nil {
			return next
		}
		subj := c.cfg.SubjectPrefix + "." + s
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := stream.GetLastMsgForSubject(gctx, subj)
		var b wire.Batch
		if err == nil {
			b, err = wire.ParseHeader(m.Header)
		}
		if err != nil {
			cancel()
			continue // no message for it (yet), or a hiccup: keep the last value
		}
		end := b.End() // a split frame is in the stream once its last part is
		// Behind: the first message after the applied one says how old
		// the oldest unapplied change is.
		var nextSeq uint64
		var nextCommit int64
		if p := c.st.Position(s); p.Position().Less(end) && m.Sequence > p.StreamSeq {
			if nm, err := stream.GetMsg(gctx, p.StreamSeq+1, jetstream.WithGetMsgSubject(subj)); err == nil {
				if nb, err := wire.ParseHeader(nm.Header); err == nil {
					nextSeq, nextCommit = nm.Sequence, nb.FirstCommit
					if nextCommit == 0 {
						nextCommit = nb.LastCommit
					}
				}
			}
		}
		cancel()
		c.ap.SetTail(s, m.Sequence, end, nextSeq, nextCommit)
	}
	return next
}

// holds reports whether the stream still holds the message id at seq. A
// message gone (retention, a purge) or a failed lookup counts as held:
// only a different message at seq proves the stream is not the one read.
func (c *Consumer) holds(ctx context.Context, stream jetstream.Stream, seq uint64, id string) bool {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := stream.GetMsg(gctx, seq)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			c.log.Debug("checking the message at the cursor", "seq", seq, "err", err)
		}
		return true
	}
	return MessageID(m.Subject, m.Header) == id
}

func (c *Consumer) rescan(created int64) store.StreamCursor {
	c.m.Rescans.Inc()
	c.caughtUp.Store(false)
	cur := store.StreamCursor{Seq: 0, Created: created}
	c.ap.Reset(cur)
	return cur
}
