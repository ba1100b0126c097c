// Package shipper turns one source's change files into a JetStream stream:
// it tails the source's segments (package tail), cuts byte ranges of whole,
// checksum-verified frames into messages, compresses them and publishes them
// asynchronously, each message described by wire.Batch headers with a
// Nats-Msg-Id derived from its position (package wire).
//
// What a Shipper promises, per source, on subject "<prefix>.<source>":
//
//   - Nothing is skipped. Frames are shipped in file order as they are on
//     disk; a transaction is never split across messages unless it is larger
//     than one message, in which case it goes as ordered parts (see wire).
//     Mid-file corruption, a file that shrinks, a header that does not match
//     its file, or a gap in the segment chain stop the Shipper with an error
//     naming the file and offset. A crashed writer's torn tail is not
//     shipped; its size is logged, counted and carried in Batch.Torn.
//   - Exactly once into the stream, as far as JetStream can tell: the same
//     range always has the same message id, and a Shipper starts (and
//     restarts after any error or reconnection) from the position recorded
//     in the stream's last message for its subject, not from a local file.
//     The local checkpoint is a hint used to notice a stream that lost
//     acknowledged messages (README.md, guarantee 6: "A broker's ack is not durability"): then the Shipper logs it
//     loudly, counts it (errors{kind="stream_behind"}) and re-ships from the
//     stream's real tail. Retention therefore keeps shipped segments for a
//     minimum age counted from their acknowledgement. A stream that
//     disappears under a running Shipper (deleted, or the server's store
//     lost), noticed at the next publish or, while there is nothing to
//     publish, by a check every WithStreamCheckInterval, is re-created with
//     the same configuration (lease bucket included), logged and counted
//     (errors{kind="stream_lost"}), and
//     re-shipped from the files from its real tail: from the oldest segment
//     on disk when it is empty. If retention already removed segments the
//     empty stream needs, the Shipper stops with ErrGap naming them.
//   - The legacy never waits: the Shipper only reads the files. While NATS
//     is down the files are the buffer; the backlog is a metric; the
//     Shipper reconnects, catches up, and loses or doubles nothing.
//   - Bounded memory: reads go into one reused buffer, messages are cut
//     into a few pooled buffers, at most WithMaxInFlight bytes of messages
//     wait for acks, and each compression worker reuses one zstd encoder.
//
// Publishing. A session runs a pipeline: the Run goroutine reads and
// verifies frames (tail.Follower) and cuts them into messages, copied into a
// few pooled buffers; WithCompressWorkers goroutines compress them, each
// with its own zstd encoder; one publisher publishes them in file order with
// PublishMsgAsync, within a bound on bytes and messages in flight; one acker
// waits for the acks in order and advances the acknowledged position. The first
// publish of every session is synchronous and fenced with
// Nats-Expected-Last-Subject-Sequence on the sequence of the message the
// session resumed from. A failed ack ends the session: the Shipper stops
// publishing, drains what is in flight, and starts a new session from the
// stream's tail, so a re-publish starts at the first failed position (and
// the server drops re-published duplicates). If a later message was stored
// while an earlier one failed (a hole: the stream holds ranges out of
// order), the next sessions re-ship from the hole with wire.Batch.Repair
// set until an ack past it, and log it (errors{kind="stream_hole"}). The
// hole is kept in the local checkpoint meanwhile: the stream's tail is past
// it, so a Shipper restarted after a stop or crash finds it there. A
// reconnection also ends the session, so the stream's tail is checked
// after every outage: a server killed after acknowledging messages it had
// not written loses them, and a message the session published just as the
// client reconnected (it checks the epoch before and after each publish)
// may be stored after them; the next session then walks the stream back
// from its tail over such messages and repairs the hole under them, if
// any (checkTail). Each session is one value (session.go) holding its
// stages' shared state and a context the first failure cancels, with the
// failure as its cause: the stages stop on it rather than poll for it.
//
// Group runs several sources as ferry ship does (stream-creation retry,
// per-source failure, health); DiskStages, ShippedStages and MergeStages
// read how far each stage of a source got, as ferry status shows it.
//
// One shipper per source. Two Shippers on one source would interleave
// ranges, so a Shipper holds a lease: a key per stream and source in a
// JetStream KV bucket whose TTL expires it unless it is renewed (every TTL/3;
// the Shipper stops publishing when its last renewal is older than 2/3 of the
// TTL, before anyone else can take it). A second Shipper finds the key and
// refuses to start (ErrSourceBusy). The lease is the liveness half; the
// safety half is the fenced first publish of every session: if anything was
// published on the subject after the message the session resumed from, the
// publish fails and the Shipper stops (ErrSourceBusy) instead of
// interleaving. A Shipper also holds a flock on an instance file next to its
// checkpoint (DIR/<source>.ship-instance), which keeps a persistent instance
// id: a second Shipper process on the same directory is refused at once, and
// the lease names its holder host:pid:instance:boot. After a kill -9 the
// same shipper restarted on the same host (same boot, same checkpoint
// directory) finds the lease naming its own identity while it holds the
// flock, so the holder is dead: it takes the lease over at once (a
// compare-and-set on the lease's revision). Any other shipper is refused
// until the lease expires within its TTL (the systemd unit retries). With
// the checkpoint disabled or WithOwner set there is no instance file and no
// takeover.
package shipper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/tail"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is what a Shipper needs of JetStream. *jsclient.Client implements
// it.
type Stream interface {
	// Subject returns the subject of source's messages.
	Subject(source string) string
	// MaxPayload returns the largest message the server accepts.
	MaxPayload() int
	// Epoch changes whenever the connection was re-established.
	Epoch() uint64
	// LastMsg returns the subject's last stored message, nil if none;
	// jsclient.ErrStreamNotFound if the stream is gone.
	LastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
	// PrevMsg returns the subject's last stored message before sequence
	// before, nil if none.
	PrevMsg(ctx context.Context, subject string, before uint64) (*jetstream.RawStreamMsg, error)
	// Recreate creates the stream (and the lease bucket) again, with the
	// same configuration, if they are gone.
	Recreate(ctx context.Context) error
	// PublishFenced publishes and waits for the ack, on the condition
	// that the subject's last sequence is lastSeq; jsclient.ErrFenced if
	// it is not.
	PublishFenced(ctx context.Context, msg *nats.Msg, lastSeq uint64) (*jetstream.PubAck, error)
	// PublishAsync publishes without waiting; the future resolves with
	// the ack or an error (it always resolves, at worst by timeout).
	PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error)
	// LeaseTTL is how long a lease outlives its last renewal.
	LeaseTTL() time.Duration
	// AcquireLease takes a lease (jsclient.ErrLeaseHeld if taken).
	AcquireLease(ctx context.Context, key, owner string) (uint64, error)
	// RenewLease renews it (jsclient.ErrLeaseLost if it changed hands).
	RenewLease(ctx context.Context, key, owner string, rev uint64) (uint64, error)
	// ReleaseLease gives it up.
	ReleaseLease(ctx context.Context, key string, rev uint64) error
}

var _ Stream = (*jsclient.Client)(nil)

// Errors.
var (
	// ErrSourceBusy means another shipper ships this source.
	ErrSourceBusy = errors.New("shipper: source is shipped by another shipper")
	// ErrGap means the stream needs segments that are no longer on disk
	// (retention removed them before the stream lost them).
	ErrGap = errors.New("shipper: segments the stream needs are gone from disk")
	// ErrAlreadyRun is returned by a second call of Run.
	ErrAlreadyRun = errors.New("shipper: Run called twice (a Shipper runs once; create a new one)")
)

// Stats are a Shipper's figures, for programs that embed it.
type Stats struct {
	// Acked is the position up to which JetStream acknowledged the source.
	Acked format.Position
	// Published is the end of the last message published.
	Published format.Position
	// LastCommit is the newest frame time acknowledged (Unix ns).
	LastCommit int64
	Frames     uint64
	Changes    uint64
	RawBytes   uint64
	// CompressedBytes counts message bodies.
	CompressedBytes uint64
	Batches         uint64
	// Repairs counts holes found in the stream; Behind counts times the
	// stream's tail was found behind what had been acknowledged.
	Repairs   uint64
	Behind    uint64
	TornBytes int64
	// Partial and PartialBytes: a partial frame at the end of the newest
	// segment the Shipper has waited at for more than a few polls (a
	// writer that crashed and has not restarted, or a very slow write).
	Partial         format.Position
	PartialBytes    int64
	BacklogBytes    int64
	BacklogSegments int
	Sessions        uint64
}

// Shipper ships one source. Create it with New, run it with Run.
type Shipper struct {
	st      Stream
	dir     string
	source  string
	subject string
	o       options
	log     *slog.Logger
	met     *sourceMetrics
	comps   []*wire.Compressor // one per compression worker
	ret     *retainer
	maxRaw  int
	bodies  bodyPool

	mu       sync.Mutex
	stats    Stats
	hint     format.Position // acknowledged position known before the session
	hintOK   bool
	hole     *format.Position // a hole to repair, kept in the checkpoint until acked past
	lastHole *format.Position // the hole in the last checkpoint written
	// suspects are the message ids a session may have published to a
	// server it reconnected to (the epoch changed around the publish):
	// the next resume checks the stream's chain under them (checkTail).
	suspects     map[string]struct{}
	lastSuspects int // how many the last checkpoint holds
	ran          bool
	stopped      bool
	cancel       context.CancelFunc
	done         chan struct{}
	lastCkpt     format.Position
}

// New returns a Shipper of source, whose segments are in dir, publishing to
// st.
func New(st Stream, dir, source string, opts ...Option) (*Shipper, error) {
	if err := checkSource(dir, source); err != nil {
		return nil, err
	}
	o := options{
		codec:            wire.CodecZstd,
		linger:           DefaultLinger,
		maxInFlightBytes: DefaultMaxInFlightBytes,
		maxInFlightMsgs:  DefaultMaxInFlightMsgs,
		poll:             DefaultPollInterval,
		streamCheck:      DefaultStreamCheck,
		minAge:           DefaultMinAge,
		drainTimeout:     DefaultDrainTimeout,
		maxBatchChanges:  1 << 30,
		workers:          min(2, runtime.GOMAXPROCS(0)),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.metrics == nil {
		m, err := NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		o.metrics = m
	}
	if o.checkpoint == "" && !o.noCheckpoint {
		o.checkpoint = filepath.Join(dir, source+".ship-checkpoint")
	}
	if o.owner == "" && o.checkpoint == "" {
		// No checkpoint directory, no persistent identity (see instance):
		// a restart waits for the lease to expire.
		o.owner = randomOwner()
	}
	var comps []*wire.Compressor
	for i := 0; i < o.workers; i++ {
		c := o.comp
		if c == nil {
			var err error
			if c, err = wire.NewCompressor(zstd.SpeedFastest); err != nil {
				return nil, err
			}
		}
		comps = append(comps, c)
	}
	maxRaw := st.MaxPayload() - headroom
	if maxRaw < 1024 {
		return nil, fmt.Errorf("shipper: server max_payload %d is too small", st.MaxPayload())
	}
	if o.maxBatchBytes > 0 && o.maxBatchBytes < maxRaw {
		maxRaw = o.maxBatchBytes
	}
	s := &Shipper{
		st: st, dir: dir, source: source, subject: st.Subject(source), o: o,
		log:    o.log.With("source", source),
		met:    o.metrics.forSource(source),
		comps:  comps,
		maxRaw: maxRaw,
		ret:    &retainer{policy: o.retention, minAge: o.minAge, archiveDir: o.archiveDir, ackedAt: map[uint64]time.Time{}},
		done:   make(chan struct{}),
	}
	return s, nil
}

// NewFromConn is New over a JetStream client of nc with cfg (see
// jsclient.New): the stream and lease bucket are created or checked.
func NewFromConn(ctx context.Context, nc *nats.Conn, cfg jsclient.Config, dir, source string, opts ...Option) (*Shipper, error) {
	c, err := jsclient.New(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	return New(c, dir, source, opts...)
}

// Source returns the source name.
func (s *Shipper) Source() string { return s.source }

// Stats returns a snapshot of the Shipper's figures.
func (s *Shipper) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Stop asks Run to drain what is in flight and return, and waits for it.
func (s *Shipper) Stop() {
	s.mu.Lock()
	cancel, ran := s.cancel, s.ran
	s.stopped = true
	s.mu.Unlock()
	if !ran {
		return
	}
	if cancel != nil {
		cancel()
	}
	<-s.done
}

// Done is closed when Run has returned.
func (s *Shipper) Done() <-chan struct{} { return s.done }

// fatalError marks an error that ends Run (the others end a session, and the
// Shipper retries).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatal(err error) error { return &fatalError{err} }

// Run ships until ctx is cancelled or Stop is called (then it drains what is
// in flight and returns nil), or until a fatal error: corruption in the
// files, another shipper on the source (ErrSourceBusy), an invalid setup.
// Transient errors (NATS down, publish failures) are retried with backoff.
// A Shipper runs once.
func (s *Shipper) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return ErrAlreadyRun
	}
	s.ran = true
	ctx, s.cancel = context.WithCancel(ctx)
	if s.stopped {
		s.cancel() // Stop came first
	}
	s.mu.Unlock()
	defer close(s.done)
	defer s.cancel()

	if c, ok, err := loadCheckpoint(s.o.checkpoint); err != nil {
		s.log.Warn("ignoring the local checkpoint", "err", err)
		s.met.error("checkpoint")
	} else if ok && c.Subject == s.subject && c.Stream == s.streamName() {
		s.hint, s.hintOK = c.pos(), true
		if c.HoleSegment > 0 {
			// A repair that a stop or crash interrupted: the stream's
			// tail is past the hole, so resume would not see it.
			hole := format.Position{Segment: c.HoleSegment, Offset: c.HoleOffset}
			s.log.Warn("resuming the repair of a hole in the stream that a restart interrupted", "hole", hole.String())
			s.hole, s.lastHole = &hole, &hole
		}
		if len(c.Suspects) > 0 {
			s.suspects = make(map[string]struct{}, len(c.Suspects))
			for _, id := range c.Suspects {
				s.suspects[id] = struct{}{}
			}
			s.lastSuspects = len(c.Suspects)
		}
	}

	watch, err := tail.NewWatch(s.dir, s.o.linger, s.log)
	if err != nil {
		s.log.Warn("no file events; polling only", "err", err)
	}
	if watch != nil {
		defer watch.Close()
	}

	owner := s.o.owner
	var mine func(string) bool
	if owner == "" {
		in, err := lockInstance(filepath.Join(filepath.Dir(s.o.checkpoint), s.source+".ship-instance"), s.source)
		switch {
		case errors.Is(err, ErrSourceBusy):
			s.met.error("lease")
			return err
		case errors.Is(err, format.ErrNotRegular):
			// A link or a FIFO where the instance file belongs: someone
			// put it there; writing through it would clobber its target.
			s.log.Error("source stopped", "err", err)
			return err
		case err != nil:
			// A read-only directory: ship anyway, without the takeover.
			s.log.Warn("no instance file: a restart after a crash will wait for the lease to expire", "err", err)
			owner = randomOwner()
		default:
			defer in.close() // after the lease's release (defers run last first)
			owner, mine = in.owner(), in.mine
		}
	}
	l := &lease{st: s.st, key: s.subject, owner: owner, mine: mine, ttl: s.st.LeaseTTL(), log: s.log}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := l.acquire(ctx)
		if err == nil {
			break
		}
		s.met.error("lease")
		if errors.Is(err, ErrSourceBusy) {
			return err
		}
		s.log.Warn("cannot take the source's lease yet; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	lctx, lcancel := context.WithCancel(context.Background())
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() { defer lwg.Done(); l.keep(lctx) }()
	defer func() {
		lcancel()
		lwg.Wait()
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l.release(rctx)
		cancel()
	}()

	s.log.Info("shipping", "dir", s.dir, "subject", s.subject, "codec", s.o.codec, "max_message_raw", s.maxRaw, "owner", owner)
	backoff := 100 * time.Millisecond
	var runErr error
	for {
		shipped, err := s.session(ctx, watch, l)
		if ctx.Err() != nil {
			break
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			s.log.Error("source stopped", "err", fe.err)
			runErr = fe.err
			break
		}
		if shipped {
			backoff = 100 * time.Millisecond
		}
		if err != nil {
			s.log.Warn("shipping interrupted; resuming from the stream's tail", "err", err, "retry_in", backoff)
		}
		s.upkeep(nil, time.Now()) // the backlog is a metric during outages too
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		if ctx.Err() != nil {
			break
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	s.saveCheckpoint()
	return runErr
}

// randomOwner names a shipper without a persistent identity: host:pid:random.
func randomOwner() string {
	host, _ := os.Hostname()
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(r[:]))
}

// lease holds the source's lease and keeps it renewed.
type lease struct {
	st    Stream
	key   string
	owner string
	mine  func(holder string) bool // may take over a lease this holder left (nil: never)
	ttl   time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	rev     uint64
	renewed time.Time
	lost    error
}

func (l *lease) acquire(ctx context.Context) error {
	rev, err := l.st.AcquireLease(ctx, l.key, l.owner)
	var held *jsclient.LeaseHeldError
	if errors.As(err, &held) && held.Rev > 0 && l.mine != nil && l.mine(held.Holder) {
		// Left by an earlier run of this shipper that died (see
		// instance): take it over, on the condition that it did not move.
		rev, err = l.st.RenewLease(ctx, l.key, l.owner, held.Rev)
		if err != nil {
			return fmt.Errorf("shipper: taking over this shipper's stale lease: %w", err)
		}
		l.log.Warn("took over the lease left by an earlier run of this shipper (same host, boot and instance id; it no longer holds the instance lock)",
			"key", l.key, "previous_holder", held.Holder, "owner", l.owner)
	} else if errors.Is(err, jsclient.ErrLeaseHeld) {
		return fmt.Errorf("%w: %v; stop the other shipper (a crashed one's lease expires within %v)", ErrSourceBusy, err, l.ttl)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.rev, l.renewed, l.lost = rev, time.Now(), nil
	l.mu.Unlock()
	return nil
}

// valid reports whether publishing is safe: the lease was renewed recently
// enough that nobody else can hold it.
func (l *lease) valid() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if age := time.Since(l.renewed); age > l.ttl*2/3 {
		return fmt.Errorf("shipper: lease not renewed for %v (TTL %v)", age.Round(time.Millisecond), l.ttl)
	}
	return nil
}

// renew renews the lease, or takes it again if it expired while nobody else
// took it.
func (l *lease) renew(ctx context.Context) error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	nrev, err := l.st.RenewLease(ctx, l.key, l.owner, rev)
	if errors.Is(err, jsclient.ErrLeaseLost) {
		if aerr := l.acquire(ctx); aerr != nil {
			if errors.Is(aerr, ErrSourceBusy) {
				l.mu.Lock()
				l.lost = fatal(aerr)
				l.mu.Unlock()
			}
			return aerr
		}
		l.log.Warn("lease had expired; taken again", "key", l.key)
		return nil
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.rev, l.renewed = nrev, time.Now()
	l.mu.Unlock()
	return nil
}

func (l *lease) keep(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
		if err := l.renew(rctx); err != nil && ctx.Err() == nil {
			l.log.Warn("lease renewal failed", "err", err)
		}
		cancel()
	}
}

func (l *lease) release(ctx context.Context) {
	l.mu.Lock()
	rev, lost := l.rev, l.lost
	l.mu.Unlock()
	if lost != nil {
		return
	}
	if err := l.st.ReleaseLease(ctx, l.key, rev); err != nil {
		l.log.Warn("releasing the lease failed; it expires by itself", "err", err, "ttl", l.ttl)
	}
}

// streamName names the stream in the checkpoint, when the Stream says it
// (a checkpoint of another stream is no hint about this one).
func (s *Shipper) streamName() string {
	if n, ok := s.st.(interface{ StreamName() string }); ok {
		return n.StreamName()
	}
	return ""
}

func (s *Shipper) saveCheckpoint() {
	if s.o.checkpoint == "" {
		return
	}
	s.mu.Lock()
	acked, hole := s.stats.Acked, s.hole
	suspects := make([]string, 0, len(s.suspects))
	for id := range s.suspects {
		suspects = append(suspects, id)
	}
	s.mu.Unlock()
	if acked.Segment == 0 || acked == s.lastCkpt && hole == s.lastHole && len(suspects) == s.lastSuspects {
		return
	}
	slices.Sort(suspects)
	c := checkpoint{Stream: s.streamName(), Subject: s.subject, Segment: acked.Segment, Offset: acked.Offset, Suspects: suspects}
	if hole != nil {
		c.HoleSegment, c.HoleOffset = hole.Segment, hole.Offset
	}
	if err := saveCheckpoint(s.o.checkpoint, c); err != nil {
		s.log.Warn("writing the local checkpoint failed (it is only a hint)", "err", err)
		s.met.error("checkpoint")
		return
	}
	s.lastCkpt, s.lastHole, s.lastSuspects = acked, hole, len(suspects)
}
