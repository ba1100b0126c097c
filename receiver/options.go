package receiver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrInvalidOption wraps every option validation error.
var ErrInvalidOption = errors.New("receiver: invalid option")

// Defaults of the options.
const (
	DefaultReadyLag    = 5 * time.Second
	DefaultKeepChanges = 1_000_000
	DefaultKeepAge     = 24 * time.Hour
	DefaultCacheSize   = 64 << 20
	// DefaultProgressInterval is how often the receiver logs, at info
	// level, what each source applied since the last time.
	DefaultProgressInterval = 30 * time.Second
	// DefaultTombstoneRetention is how long a delete's tombstone is kept
	// (WithTombstoneRetention).
	DefaultTombstoneRetention = store.DefaultTombstoneRetention
	// DefaultCommandRetention is how long a write-back command's records
	// are kept after its outcome (WithCommandRetention).
	DefaultCommandRetention = store.DefaultCommandRetention
)

type options struct {
	nc            *nats.Conn
	dataDir       string
	stream        string
	prefix        string
	sources       []string
	readyLag      time.Duration
	waitLoads     []string
	webhook       string
	webhookToken  string
	rebuild       bool
	token         string
	keepChanges   uint64
	keepAge       time.Duration
	cacheSize     int64
	sync          bool
	registry      *prometheus.Registry
	log           *slog.Logger
	listen        string
	checkpointDir string
	maxBatchBytes int
	midChain      bool
	maxTxBytes    int64
	progress      time.Duration
	noUI          bool
	tombRetention time.Duration
	cmdRetention  time.Duration

	// Write-back (commands.go).
	origin         string
	cmdTables      map[string]string
	cmdStream      string
	cmdPrefix      string
	cmdMaxImage    int
	excludeOrigins []string
}

// Option configures a Receiver. Options validate their arguments.
type Option func(*options) error

// WithNATS sets the NATS connection (required). The caller owns it.
func WithNATS(nc *nats.Conn) Option {
	return func(o *options) error {
		if nc == nil {
			return fmt.Errorf("%w: nil NATS connection", ErrInvalidOption)
		}
		o.nc = nc
		return nil
	}
}

// WithDataDir sets the directory of the store (required).
func WithDataDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("%w: empty data directory", ErrInvalidOption)
		}
		o.dataDir = dir
		return nil
	}
}

// WithStream sets the stream name (default wire.DefaultStream).
func WithStream(name string) Option {
	return func(o *options) error {
		if name == "" {
			return fmt.Errorf("%w: empty stream name", ErrInvalidOption)
		}
		o.stream = name
		return nil
	}
}

// WithSubjectPrefix sets the subject prefix (default
// wire.DefaultSubjectPrefix).
func WithSubjectPrefix(p string) Option {
	return func(o *options) error {
		if p == "" {
			return fmt.Errorf("%w: empty subject prefix", ErrInvalidOption)
		}
		o.prefix = p
		return nil
	}
}

// WithSources restricts the receiver to these sources (default: all in the
// stream). Readiness then also waits for each of them.
func WithSources(sources ...string) Option {
	return func(o *options) error {
		for _, s := range sources {
			if !format.ValidSource(s) {
				return fmt.Errorf("%w: invalid source name %q (want 1-%d of [A-Za-z0-9_-])", ErrInvalidOption, s, format.MaxSourceLen)
			}
		}
		o.sources = append(o.sources, sources...)
		return nil
	}
}

// WithReadyLag sets the lag under which /readyz says ready (default 5 s).
func WithReadyLag(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: ready lag %v must be positive", ErrInvalidOption, d)
		}
		o.readyLag = d
		return nil
	}
}

// WithWaitLoad makes /readyz wait until the initial load of each of these
// tables is done (and lag is under the ready lag, as always): the
// activation gate of a service that needs the legacy's existing rows.
func WithWaitLoad(tables ...string) Option {
	return func(o *options) error {
		for _, t := range tables {
			if t == "" || len(t) > format.MaxTableLen {
				return fmt.Errorf("%w: --wait-load table name %q (want 1-%d bytes)", ErrInvalidOption, t, format.MaxTableLen)
			}
			if !contains(o.waitLoads, t) {
				o.waitLoads = append(o.waitLoads, t)
			}
		}
		return nil
	}
}

// WithWebhook pushes the change log to url; token (optional) is sent as a
// bearer token.
func WithWebhook(rawURL, token string) Option {
	return func(o *options) error {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: webhook URL %q: want http(s)://host/path", ErrInvalidOption, rawURL)
		}
		o.webhook, o.webhookToken = rawURL, token
		return nil
	}
}

// WithRebuild discards the store and rebuilds it from the start of the
// stream.
func WithRebuild(rebuild bool) Option {
	return func(o *options) error { o.rebuild = rebuild; return nil }
}

// WithToken requires "Authorization: Bearer <token>" on the API.
func WithToken(token string) Option {
	return func(o *options) error { o.token = token; return nil }
}

// WithChangeLogRetention keeps at most count changes (0: no count bound)
// and none older than age (0: no age bound) in the change log. Changes the
// webhook has not delivered are always kept.
func WithChangeLogRetention(count uint64, age time.Duration) Option {
	return func(o *options) error {
		if age < 0 {
			return fmt.Errorf("%w: negative change log age %v", ErrInvalidOption, age)
		}
		if count == 0 && age == 0 {
			return fmt.Errorf("%w: change log retention needs a count or an age", ErrInvalidOption)
		}
		o.keepChanges, o.keepAge = count, age
		return nil
	}
}

// WithCacheSize sets the Pebble block cache size in bytes (default 64 MiB).
func WithCacheSize(n int64) Option {
	return func(o *options) error {
		if n < 1<<20 {
			return fmt.Errorf("%w: cache size %d below 1 MiB", ErrInvalidOption, n)
		}
		o.cacheSize = n
		return nil
	}
}

// WithSync fsyncs every store commit (default off; see receiver/store).
func WithSync(sync bool) Option {
	return func(o *options) error { o.sync = sync; return nil }
}

// WithRegistry registers the receiver's metrics on reg (default: a new
// registry, served on /metrics).
func WithRegistry(reg *prometheus.Registry) Option {
	return func(o *options) error {
		if reg == nil {
			return fmt.Errorf("%w: nil registry", ErrInvalidOption)
		}
		o.registry = reg
		return nil
	}
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = l
		return nil
	}
}

// WithListen makes Run also serve the API on addr ("127.0.0.1:8080").
func WithListen(addr string) Option {
	return func(o *options) error {
		if addr == "" {
			return fmt.Errorf("%w: empty listen address", ErrInvalidOption)
		}
		o.listen = addr
		return nil
	}
}

// WithCheckpointDir enables POST /v1/checkpoint, which writes a checkpoint
// of the store under dir and returns its path.
func WithCheckpointDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("%w: empty checkpoint directory", ErrInvalidOption)
		}
		o.checkpointDir = dir
		return nil
	}
}

// WithMaxBatchBytes bounds one store commit (default 8 MiB).
func WithMaxBatchBytes(n int) Option {
	return func(o *options) error {
		if n < 64<<10 || n > 1<<30 {
			return fmt.Errorf("%w: max batch bytes %d outside 64 KiB..1 GiB", ErrInvalidOption, n)
		}
		o.maxBatchBytes = n
		return nil
	}
}

// WithStartMidChain lets a source with nothing applied yet start at its first
// message in the stream even if the stream no longer holds the beginning of
// the source's chain (retention). Off by default: that is a gap.
func WithStartMidChain(on bool) Option {
	return func(o *options) error { o.midChain = on; return nil }
}

// WithMaxTxBytes bounds what one transaction may cost the receiver (default
// consume.DefaultMaxTxBytes, 64 MiB): the span of a frame split over several
// messages, and the decoding working set of a transaction. A transaction
// beyond it stops its source with an error naming the limit.
func WithMaxTxBytes(n int64) Option {
	return func(o *options) error {
		if n < 1<<20 || n > 1<<30 {
			return fmt.Errorf("%w: max transaction bytes %d outside 1 MiB..1 GiB", ErrInvalidOption, n)
		}
		o.maxTxBytes = n
		return nil
	}
}

// WithUI serves the cockpit page at /ui/ (on by default; see receiver/ui).
func WithUI(on bool) Option {
	return func(o *options) error { o.noUI = !on; return nil }
}

// WithTombstoneRetention sets how long a delete's tombstone is kept (default
// DefaultTombstoneRetention): while it is, a change older than the delete
// (by row version, or by position from the same source) cannot bring the
// row back; one that arrives later than that does.
func WithTombstoneRetention(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: tombstone retention %v must be positive", ErrInvalidOption, d)
		}
		o.tombRetention = d
		return nil
	}
}

// WithCommandRetention sets how long the records of a write-back command
// (what its service submitted, its outcome) are kept after its outcome
// (default DefaultCommandRetention, 7 days). It is the receiver's
// idempotency window: within it a resubmission of the id is the same
// command, answered with its outcome; after it the id is a new command,
// published again (the legacy's own record of the id still keeps it from
// being carried out twice: it writes the outcome again). Pending commands
// are kept whatever their age. At least the commands stream's
// de-duplication window (10 min): a resubmission inside it would be
// dropped by the stream and wait for an outcome for ever.
func WithCommandRetention(d time.Duration) Option {
	return func(o *options) error {
		if d < command.DuplicateWindow {
			return fmt.Errorf("%w: command retention %v is shorter than the commands stream's de-duplication window %v", ErrInvalidOption, d, command.DuplicateWindow)
		}
		o.cmdRetention = d
		return nil
	}
}

// WithProgressInterval sets how often the receiver logs its progress line
// (default DefaultProgressInterval).
func WithProgressInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: progress interval %v must be positive", ErrInvalidOption, d)
		}
		o.progress = d
		return nil
	}
}
