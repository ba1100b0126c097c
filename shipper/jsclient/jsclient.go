// Package jsclient is the shipper's JetStream side: it creates or checks the
// stream, publishes batch messages (asynchronously, or synchronously fenced on
// the subject's last sequence), reads a subject's last message back, and
// holds per-source leases in a KV bucket. It implements the small interface
// the shipper package declares (shipper.Stream).
package jsclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors.
var (
	// ErrIncompatible means an existing stream or bucket that Ferry cannot
	// use as it is configured.
	ErrIncompatible = errors.New("jsclient: existing stream is incompatible")
	// ErrFenced means a fenced publish found another message on the
	// subject than expected: someone else publishes for this source.
	ErrFenced = errors.New("jsclient: subject's last sequence moved (another publisher on this source?)")
	// ErrLeaseHeld means another owner holds the lease.
	ErrLeaseHeld = errors.New("jsclient: lease held by another owner")
	// ErrLeaseLost means the lease was taken over or expired.
	ErrLeaseLost = errors.New("jsclient: lease lost")
	// ErrStreamNotFound means the stream does not exist (any more): it was
	// deleted, or the server lost its store. Recreate makes it again.
	ErrStreamNotFound = errors.New("jsclient: stream not found")
	// ErrReconnectBuffer means a connection that keeps what is published
	// while it reconnects, to send it to the server it reconnects to.
	ErrReconnectBuffer = errors.New("jsclient: the NATS connection keeps a reconnect buffer")
)

// CheckConn refuses a connection with a reconnect buffer (anything but
// nats.ReconnectBufSize(-1)). A server killed after acknowledging messages
// it had not written loses them; a message buffered while the client
// reconnects is then stored by the restarted server after the lost ones,
// and the stream's tail no longer says where the source's chain breaks.
// Without the buffer a publish while disconnected fails at once, and the
// shipper and the loader can tell which publishes may have reached a new
// server (Epoch). The files are the buffer, not the client.
func CheckConn(nc *nats.Conn) error {
	if nc.Opts.ReconnectBufSize >= 0 {
		return fmt.Errorf("%w of %d bytes: connect with nats.ReconnectBufSize(-1) (natsconn.Dial does): messages buffered across a server restart can be stored after acknowledged ones the server lost, leaving a hole in a source's chain",
			ErrReconnectBuffer, nc.Opts.ReconnectBufSize)
	}
	return nil
}

// Defaults of Config.
const (
	DefaultDuplicates = 2 * time.Minute
	DefaultLeaseTTL   = 10 * time.Second
)

// Config says which stream and lease bucket to use.
type Config struct {
	// Stream is the stream name. Default wire.DefaultStream.
	Stream string
	// Prefix is the subject prefix: the stream holds Prefix.>. Default
	// wire.DefaultSubjectPrefix.
	Prefix string
	// Replicas of the stream and the lease bucket. Default 1.
	Replicas int
	// Duplicates is the stream's de-duplication window. Default
	// DefaultDuplicates.
	Duplicates time.Duration
	// LeaseBucket is the KV bucket of shipper leases. Default
	// "ferry-ship-leases".
	LeaseBucket string
	// LeaseTTL is how long a lease outlives its last renewal, for a new
	// bucket. Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// MaxPending bounds the client's asynchronous publishes in flight
	// (the shipper bounds bytes itself, well under this). Default 4096.
	MaxPending int
	// AckTimeout bounds the wait for an asynchronous publish's ack.
	// Default 30 s.
	AckTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = wire.DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = wire.DefaultSubjectPrefix
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Duplicates <= 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.LeaseBucket == "" {
		c.LeaseBucket = "ferry-ship-leases"
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 4096
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 30 * time.Second
	}
}

// Client publishes to one stream. It is safe for concurrent use.
type Client struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream

	mu       sync.Mutex // guards what Recreate replaces
	stream   jetstream.Stream
	kv       jetstream.KeyValue
	leaseTTL time.Duration
}

// New connects the stream and lease bucket of cfg over nc, creating them if
// they do not exist and refusing (ErrIncompatible) an existing stream Ferry
// cannot use.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Client, error) {
	cfg.defaults()
	if err := CheckConn(nc); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jsclient: %w", err)
	}
	c := &Client{cfg: cfg, nc: nc, js: js}
	if err := c.Recreate(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Recreate creates the stream and the lease bucket again, with the same
// configuration, if they are gone (deleted, or the server lost its store),
// and checks them if they exist. New does the same.
func (c *Client) Recreate(ctx context.Context) error {
	st, err := EnsureStream(ctx, c.js, c.cfg)
	if err != nil {
		return err
	}
	kv, ttl, err := c.ensureBucket(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.stream, c.kv, c.leaseTTL = st, kv, ttl
	c.mu.Unlock()
	return nil
}

func (c *Client) handles() (jetstream.Stream, jetstream.KeyValue) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream, c.kv
}

// streamGone reports whether err says that the stream does not exist.
func streamGone(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound
}

// Subject returns the subject of source's messages.
func (c *Client) Subject(source string) string { return c.cfg.Prefix + "." + source }

// StreamName returns the stream's name.
func (c *Client) StreamName() string { return c.cfg.Stream }

// EnsureStream creates cfg's stream or checks that the existing one fits:
// file storage, limits retention, subjects covering Prefix.>, the configured
// replicas and a duplicate window.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	cfg.defaults()
	want := cfg.Prefix + ".>"
	st, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.Stream,
			Description: "Ferry change batches, one subject per source",
			Subjects:    []string{want},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Replicas:    cfg.Replicas,
			Duplicates:  cfg.Duplicates,
		})
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			// The server answered: retrying will not help.
			return nil, fmt.Errorf("%w: creating stream %s with subjects %s: %v; use --stream to name the stream that holds them, or change --subject-prefix",
				ErrIncompatible, cfg.Stream, want, err)
		}
		if err != nil {
			return nil, fmt.Errorf("jsclient: creating stream %s: %w", cfg.Stream, err)
		}
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jsclient: looking up stream %s: %w", cfg.Stream, err)
	}
	sc := st.CachedInfo().Config
	bad := func(what string, args ...any) (jetstream.Stream, error) {
		return nil, fmt.Errorf("%w: stream %s: %s; fix the stream (nats stream edit) or the shipper's flags", ErrIncompatible, cfg.Stream, fmt.Sprintf(what, args...))
	}
	switch {
	case sc.Storage != jetstream.FileStorage:
		return bad("storage is %s, want file", sc.Storage)
	case sc.Retention != jetstream.LimitsPolicy:
		return bad("retention is %s, want limits (receivers read the stream as the system of record)", sc.Retention)
	case !slices.Contains(sc.Subjects, want) && !slices.Contains(sc.Subjects, ">"):
		return bad("subjects %v do not include %s (--subject-prefix)", sc.Subjects, want)
	case sc.Replicas != cfg.Replicas:
		return bad("has %d replicas, %d asked (--replicas)", sc.Replicas, cfg.Replicas)
	case sc.Duplicates <= 0:
		return bad("has no duplicate window")
	case sc.MaxMsgsPerSubject > 0:
		return bad("keeps only %d messages per subject", sc.MaxMsgsPerSubject)
	case sc.Sealed:
		return bad("is sealed")
	}
	return st, nil
}

func (c *Client) ensureBucket(ctx context.Context) (jetstream.KeyValue, time.Duration, error) {
	kv, err := c.js.KeyValue(ctx, c.cfg.LeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      c.cfg.LeaseBucket,
			Description: "Ferry shipper leases: one key per stream and source",
			TTL:         c.cfg.LeaseTTL,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    c.cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = c.js.KeyValue(ctx, c.cfg.LeaseBucket)
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("jsclient: lease bucket %s: %w", c.cfg.LeaseBucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("jsclient: lease bucket %s status: %w", c.cfg.LeaseBucket, err)
	}
	if status.TTL() <= 0 {
		return nil, 0, fmt.Errorf("%w: lease bucket %s has no TTL: a crashed shipper's lease would never expire; delete the bucket", ErrIncompatible, c.cfg.LeaseBucket)
	}
	return kv, status.TTL(), nil
}

// MaxPayload returns the largest message the server accepts.
func (c *Client) MaxPayload() int { return int(c.nc.MaxPayload()) }

// Epoch changes whenever the connection was lost and re-established: messages
// published in different epochs may have been lost in between.
func (c *Client) Epoch() uint64 { return c.nc.Stats().Reconnects }

// LastMsg returns the last message stored on subject, or nil if there is none.
func (c *Client) LastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	st, _ := c.handles()
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if streamGone(err) {
		return nil, fmt.Errorf("%w: stream %s, reading the last message of %s: %v", ErrStreamNotFound, c.cfg.Stream, subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("jsclient: reading the last message of %s in stream %s: %w", subject, c.cfg.Stream, err)
	}
	return m, nil
}

// PrevMsg returns the last message stored on subject before sequence
// before, or nil if there is none (see PrevMsg).
func (c *Client) PrevMsg(ctx context.Context, subject string, before uint64) (*jetstream.RawStreamMsg, error) {
	st, _ := c.handles()
	m, err := PrevMsg(ctx, st, subject, before)
	if streamGone(err) {
		return nil, fmt.Errorf("%w: stream %s, reading %s before sequence %d: %v", ErrStreamNotFound, c.cfg.Stream, subject, before, err)
	}
	return m, err
}

// PrevMsg returns the last message of st stored on subject before sequence
// before, or nil if there is none. It looks back in windows that double,
// then bisects: a few requests however many other subjects' messages lie in
// between.
func PrevMsg(ctx context.Context, st jetstream.Stream, subject string, before uint64) (*jetstream.RawStreamMsg, error) {
	// next returns the first message on subject at or after seq and before
	// before, or nil.
	next := func(seq uint64) (*jetstream.RawStreamMsg, error) {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && m.Sequence >= before {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("jsclient: reading %s before sequence %d: %w", subject, before, err)
		}
		return m, nil
	}
	if before <= 1 {
		return nil, nil
	}
	// Find a window [lo, hi) holding one.
	var found *jetstream.RawStreamMsg
	hi := before
	for w := uint64(64); found == nil; w *= 2 {
		lo := uint64(1)
		if hi > w {
			lo = hi - w
		}
		m, err := next(lo)
		if err != nil {
			return nil, err
		}
		if m != nil {
			found = m
			break
		}
		if lo == 1 {
			return nil, nil
		}
		hi = lo
	}
	// Bisect after it for the last one before before.
	lo, top := found.Sequence+1, before
	for lo < top {
		mid := lo + (top-lo)/2
		m, err := next(mid)
		if err != nil {
			return nil, err
		}
		if m == nil {
			top = mid
			continue
		}
		found, lo = m, m.Sequence+1
	}
	return found, nil
}

// PublishFenced publishes msg and waits for its ack, on the condition that
// the subject's last message is lastSeq (0: no message). A mismatch is
// ErrFenced.
func (c *Client) PublishFenced(ctx context.Context, msg *nats.Msg, lastSeq uint64) (*jetstream.PubAck, error) {
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(lastSeq))
	if err != nil {
		var jerr jetstream.JetStreamError
		if errors.As(err, &jerr) && jerr.APIError() != nil {
			switch jerr.APIError().ErrorCode {
			case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
				return nil, fmt.Errorf("%w: %s expected last sequence %d: %v", ErrFenced, msg.Subject, lastSeq, err)
			}
		}
		return nil, fmt.Errorf("jsclient: publishing to %s: %w", msg.Subject, err)
	}
	return ack, nil
}

// PublishAsync publishes msg without waiting for its ack.
func (c *Client) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	f, err := c.js.PublishMsgAsync(msg, jetstream.WithStallWait(c.cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jsclient: publishing to %s: %w", msg.Subject, err)
	}
	return f, nil
}

// LeaseTTL returns how long a lease lasts after its last renewal.
func (c *Client) LeaseTTL() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaseTTL
}

func (c *Client) leaseKey(key string) string { return c.cfg.Stream + "." + key }

// AcquireLease takes the lease key for owner and returns its revision, or
// ErrLeaseHeld naming the current owner.
func (c *Client) AcquireLease(ctx context.Context, key, owner string) (uint64, error) {
	k := c.leaseKey(key)
	_, kv := c.handles()
	rev, err := kv.Create(ctx, k, []byte(owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		held := &LeaseHeldError{Holder: "unknown", Key: k, Bucket: c.cfg.LeaseBucket}
		if e, gerr := kv.Get(ctx, k); gerr == nil {
			held.Holder, held.Rev = string(e.Value()), e.Revision()
		}
		return 0, held
	}
	if err != nil {
		return 0, fmt.Errorf("jsclient: acquiring lease %q in bucket %s: %w", k, c.cfg.LeaseBucket, err)
	}
	return rev, nil
}

// RenewLease extends the lease held at revision rev and returns the new
// revision, or ErrLeaseLost if it changed hands or expired.
func (c *Client) RenewLease(ctx context.Context, key, owner string, rev uint64) (uint64, error) {
	k := c.leaseKey(key)
	_, kv := c.handles()
	nrev, err := kv.Update(ctx, k, []byte(owner), rev)
	if err != nil {
		var jerr jetstream.JetStreamError
		if errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &jerr) && jerr.APIError() != nil &&
			(jerr.APIError().ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || jerr.APIError().ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: key %q in bucket %s changed since revision %d", ErrLeaseLost, k, c.cfg.LeaseBucket, rev)
		}
		return 0, fmt.Errorf("jsclient: renewing lease %q: %w", k, err)
	}
	return nrev, nil
}

// LeaseHeldError is AcquireLease's error when another owner holds the lease:
// it names the holder and the revision it holds (0 if unknown), which
// RenewLease can take over on the condition that nobody renewed it since.
type LeaseHeldError struct {
	Holder, Key, Bucket string
	Rev                 uint64
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("%v: %s holds key %q in bucket %s", ErrLeaseHeld, e.Holder, e.Key, e.Bucket)
}

// Is makes errors.Is(err, ErrLeaseHeld) hold.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// ReleaseLease deletes the lease if it is still at revision rev.
func (c *Client) ReleaseLease(ctx context.Context, key string, rev uint64) error {
	k := c.leaseKey(key)
	_, kv := c.handles()
	if err := kv.Delete(ctx, k, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("jsclient: releasing lease %q: %w", k, err)
	}
	return nil
}
