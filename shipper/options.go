package shipper

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ferrysync/ferry/format/wire"
)

// ErrInvalidOption wraps every option validation error.
var ErrInvalidOption = errors.New("shipper: invalid option")

// Defaults.
const (
	DefaultMaxInFlightBytes = 8 << 20
	DefaultMaxInFlightMsgs  = 1024
	DefaultLinger           = 2 * time.Millisecond
	DefaultPollInterval     = time.Second
	DefaultStreamCheck      = 5 * time.Second
	DefaultMinAge           = 10 * time.Minute
	DefaultDrainTimeout     = 30 * time.Second
	// headroom is kept free in every message for the headers.
	headroom = 4 << 10
)

type options struct {
	codec            wire.Codec
	comp             *wire.Compressor
	maxBatchBytes    int
	maxBatchChanges  int
	linger           time.Duration
	maxInFlightBytes int64
	maxInFlightMsgs  int
	poll             time.Duration
	streamCheck      time.Duration
	progress         time.Duration // Group's progress log interval
	log              *slog.Logger
	metrics          *Metrics
	checkpoint       string
	noCheckpoint     bool
	retention        Retention
	minAge           time.Duration
	archiveDir       string
	owner            string
	drainTimeout     time.Duration
	workers          int
}

// Option configures a Shipper.
type Option func(*options) error

// ValidateOptions checks options without building a Shipper, so that a
// command can refuse bad flags before it connects anywhere.
func ValidateOptions(opts ...Option) error {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return err
		}
	}
	return nil
}

// WithCodec sets the compression of message bodies (default zstd).
func WithCodec(c wire.Codec) Option {
	return func(o *options) error {
		if c > wire.CodecS2 {
			return fmt.Errorf("%w: codec %v", ErrInvalidOption, c)
		}
		o.codec = c
		return nil
	}
}

// WithCompressor shares a compressor (and its zstd encoder) between
// Shippers of one process. Its zstd encoder compresses one message at a
// time: sharing it saves memory and serialises compression.
func WithCompressor(c *wire.Compressor) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil compressor", ErrInvalidOption)
		}
		o.comp = c
		return nil
	}
}

// WithCompressWorkers sets how many goroutines compress messages while the
// Shipper reads the next ones and publishes the previous ones, each with its
// own zstd encoder (default 2 when GOMAXPROCS > 1, else 1).
func WithCompressWorkers(n int) Option {
	return func(o *options) error {
		if n < 1 || n > 64 {
			return fmt.Errorf("%w: compress workers %d (want 1-64)", ErrInvalidOption, n)
		}
		o.workers = n
		return nil
	}
}

// WithMaxBatchBytes bounds the raw bytes of one message (default and
// ceiling: the server's max_payload less room for headers).
func WithMaxBatchBytes(n int) Option {
	return func(o *options) error {
		if n < 1024 {
			return fmt.Errorf("%w: max batch bytes %d (want >= 1024)", ErrInvalidOption, n)
		}
		o.maxBatchBytes = n
		return nil
	}
}

// WithMaxBatchChanges bounds the changes of one message (a transaction is
// never split for it). Default: unbounded.
func WithMaxBatchChanges(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max batch changes %d (want >= 1)", ErrInvalidOption, n)
		}
		o.maxBatchChanges = n
		return nil
	}
}

// WithLinger sets the pace of messages that are not full (default 2 ms): such
// a message leaves at once unless the previous one left less than d ago; then
// it waits until d after it, gathering what the writer appends meanwhile. A
// writer committing small transactions continuously costs one message per d,
// not one per commit; a lone commit after a quiet spell leaves at once. 0
// sends every read at once.
func WithLinger(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: negative linger %v", ErrInvalidOption, d)
		}
		o.linger = d
		return nil
	}
}

// WithMaxInFlight bounds the message bytes and the messages published but
// not yet acknowledged (defaults 8 MiB, 1024).
func WithMaxInFlight(bytes int64, msgs int) Option {
	return func(o *options) error {
		if bytes < 1 || msgs < 1 {
			return fmt.Errorf("%w: max in flight %d bytes, %d messages (want >= 1)", ErrInvalidOption, bytes, msgs)
		}
		o.maxInFlightBytes, o.maxInFlightMsgs = bytes, msgs
		return nil
	}
}

// WithPollInterval sets the period of the stat/poll loop that backs up file
// events, and of metrics, checkpoint and retention upkeep (default 1 s).
func WithPollInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: poll interval %v", ErrInvalidOption, d)
		}
		o.poll = d
		return nil
	}
}

// WithStreamCheckInterval sets how often an idle Shipper (nothing new in the
// files) checks that the stream still exists (default 5 s): a stream deleted
// while nothing is being published is re-created and re-shipped within
// this, instead of at the next write of the legacy.
func WithStreamCheckInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: stream check interval %v", ErrInvalidOption, d)
		}
		o.streamCheck = d
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = l
		return nil
	}
}

// WithMetrics reports into m (shared by the Shippers of a process).
func WithMetrics(m *Metrics) Option {
	return func(o *options) error {
		if m == nil {
			return fmt.Errorf("%w: nil metrics", ErrInvalidOption)
		}
		o.metrics = m
		return nil
	}
}

// WithCheckpoint sets the checkpoint file (default
// DIR/<source>.ship-checkpoint); "" disables it.
func WithCheckpoint(path string) Option {
	return func(o *options) error {
		o.checkpoint, o.noCheckpoint = path, path == ""
		return nil
	}
}

// WithRetention sets what happens to shipped segments: kept (default),
// deleted or moved to archiveDir, once fully acknowledged for minAge. minAge
// must outlast the server's sync interval (2 min by default): JetStream
// acknowledges before it fsyncs, and the files are the safety net.
func WithRetention(r Retention, minAge time.Duration, archiveDir string) Option {
	return func(o *options) error {
		switch {
		case r > RetainArchive:
			return fmt.Errorf("%w: retention %v", ErrInvalidOption, r)
		case r != RetainKeep && minAge < time.Second:
			return fmt.Errorf("%w: retention min age %v (want >= 1s, and longer than the server's sync interval)", ErrInvalidOption, minAge)
		case r == RetainArchive && archiveDir == "":
			return fmt.Errorf("%w: retention archive needs an archive directory", ErrInvalidOption)
		}
		o.retention, o.minAge, o.archiveDir = r, minAge, archiveDir
		return nil
	}
}

// WithOwner names this shipper in its lease (default
// host:pid:instance:boot, see the package doc). A named owner never takes
// over a stale lease: a restart waits for it to expire.
func WithOwner(id string) Option {
	return func(o *options) error {
		if id == "" {
			return fmt.Errorf("%w: empty owner", ErrInvalidOption)
		}
		o.owner = id
		return nil
	}
}

// WithDrainTimeout bounds how long Stop waits for in-flight acks (default
// 30 s).
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: drain timeout %v", ErrInvalidOption, d)
		}
		o.drainTimeout = d
		return nil
	}
}
