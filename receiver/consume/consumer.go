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

	"github.com/ferrysync/ferry/format"
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
	out := make([]string, len(c.cfg.Sources))
	for i, s := range c.cfg.Sources {
		out[i] = c.cfg.SubjectPrefix + "." + s
	}
	return out
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
	c.pollTails(ictx, stream)
	created := info.Created.UnixNano()
	if created != c.ap.created || info.State.LastSeq < c.ap.lastSeq {
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

// pollTails reads each known source's last message in the stream (its
// headers say where it ends), so that status can say how far behind the
// receiver is in bytes even while it is not reading.
func (c *Consumer) pollTails(ctx context.Context, stream jetstream.Stream) {
	names := map[string]bool{}
	for _, s := range c.cfg.Sources {
		names[s] = true
	}
	for s := range c.ap.Status() {
		names[s] = true
	}
	for s := range c.st.Positions() {
		names[s] = true
	}
	for s := range names {
		if len(c.cfg.Sources) > 0 && !slices.Contains(c.cfg.Sources, s) {
			continue
		}
		m, err := stream.GetLastMsgForSubject(ctx, c.cfg.SubjectPrefix+"."+s)
		if err != nil {
			continue // no message for it (yet), or a hiccup: keep the last value
		}
		b, err := wire.ParseHeader(m.Header)
		if err != nil {
			continue
		}
		c.ap.SetTail(s, m.Sequence, format.Position{Segment: b.Segment, Offset: b.To})
	}
}

func (c *Consumer) rescan(created int64) store.StreamCursor {
	c.m.Rescans.Inc()
	c.caughtUp.Store(false)
	cur := store.StreamCursor{Seq: 0, Created: created}
	c.ap.Reset(cur)
	return cur
}
