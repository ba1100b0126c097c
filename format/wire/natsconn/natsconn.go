// Package natsconn dials NATS for Ferry's long-running agents (the shipper
// and the receiver) and for one-shot commands, with one policy for both:
//
//   - An outage is waited out: the connection reconnects forever and the
//     change files are the buffer (no client-side reconnect buffer).
//   - What cannot succeed without a change of configuration ends the run
//     with an error naming the cause and the setting to fix: a server that
//     refuses the credentials (at start, or for good while running: an
//     expired or revoked user, an unknown account), a TLS misconfiguration
//     (an unknown certificate authority, a missing or refused client
//     certificate, TLS asked of a server without it), a URL that is not a
//     NATS server or not a URL.
//
// Errors name the settings by the flags of the nats CLI, which `ferry` uses
// too (--nats, --user, --creds, --tlsca, ...). Secrets are never logged nor
// put in errors.
//
// It lives under format/wire because both the shipper and the receiver use
// it and neither may import the other.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultURL is the NATS server a command talks to when given none.
const DefaultURL = nats.DefaultURL

// Config is how to reach NATS and who to be.
type Config struct {
	// URLs is a comma-separated list of server URLs (DefaultURL if empty).
	URLs string
	// Name is the connection's name as the server shows it.
	Name string
	// User and Password, or Token, or CredsFile (a JWT and an nkey seed),
	// or NkeyFile (a seed file) authenticate the client.
	User, Password string
	Token          string
	CredsFile      string
	NkeyFile       string
	// TLSCA verifies the servers' certificates (default: the system's
	// roots); TLSCert and TLSKey are the client's certificate, together.
	TLSCA, TLSCert, TLSKey string
	// ReconnectWait is the pause between reconnection attempts (default
	// 1 s).
	ReconnectWait time.Duration
	// Logger receives disconnections, reconnections and errors (default:
	// discarded).
	Logger *slog.Logger
}

func (c *Config) urls() string {
	if u := strings.TrimSpace(c.URLs); u != "" {
		return u
	}
	return DefaultURL
}

// giveUpRefusals refusals of the credentials in a row, each at most
// refusalGap after the one before, end the connection even if the server
// accepted the reconnections in between (nats.go gives up by itself only on
// the same refusal twice in a row while reconnecting).
const (
	giveUpRefusals = 5
	refusalGap     = 30 * time.Second
	// firstTimeout bounds the first connection attempt, TLS handshake
	// included: longer than the client's default (2 s) so that a busy
	// host is not taken for an outage at start.
	firstTimeout = 5 * time.Second
)

// Dial connects to NATS and keeps reconnecting forever: a shipper or a
// receiver outlives any outage. A server that is down at start is retried
// in the background (the returned connection is then not connected yet).
//
// It fails at once, with an error naming the setting to fix, when the
// first attempt shows that no retry can succeed (see the package doc).
//
// It also returns a child of ctx for the work done over the connection.
// The client gives the connection up for good when a server refuses the
// credentials twice in a row while it reconnects, and so does Conn after
// giveUpRefusals refusals in a row; then that context is cancelled with a
// *LostError cause (see Lost), so that the caller stops its work cleanly
// and exits non-zero for its supervisor to restart or alert on, instead of
// waiting on a dead connection. Close releases the context.
func Dial(ctx context.Context, cfg Config) (*Conn, context.Context, error) {
	auth, err := cfg.Options()
	if err != nil {
		return nil, nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := cfg.ReconnectWait
	if wait <= 0 {
		wait = time.Second
	}
	urls := cfg.urls()
	c := &Conn{urls: RedactURLs(urls), creds: cfg.credentialsUsed(), refusalGap: refusalGap}
	ctx, c.cancel = context.WithCancelCause(ctx)
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1), // the files are the buffer, not the client
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.reconnected()
			log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "err", err)
			c.asyncError(nc, err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if lost := c.closed(nc.LastError()); lost != nil {
				log.Error("NATS connection lost for good; stopping", "err", lost)
			}
		}),
	}
	opts = append(opts, auth...)
	// A first attempt without retries: a server that refuses the
	// credentials, or a TLS or URL mistake, is a configuration error to
	// report now, not an outage to wait out. (With RetryOnFailedConnect
	// such errors are retried silently.) A failed nats.Connect calls none
	// of the handlers.
	nc, err := nats.Connect(urls, append(opts, nats.RetryOnFailedConnect(false), nats.Timeout(firstTimeout))...)
	if err != nil {
		if fatal := cfg.startError(c.urls, err); fatal != nil {
			c.cancel(nil)
			return nil, nil, fatal
		}
		log.Warn("NATS not reachable yet; retrying in the background (check --nats if this lasts)", "nats", c.urls, "err", err)
		if nc, err = nats.Connect(urls, opts...); err != nil {
			c.cancel(nil)
			return nil, nil, fmt.Errorf("connecting to NATS at %s: %w", c.urls, err)
		}
	}
	c.Conn = nc
	return c, ctx, nil
}

// DialOnce connects without retries, for a one-shot command that must fail
// fast when NATS is unreachable. timeout bounds the attempt (0: 5 s).
func DialOnce(cfg Config, timeout time.Duration) (*nats.Conn, error) {
	auth, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = firstTimeout
	}
	urls := cfg.urls()
	opts := append([]nats.Option{nats.Name(cfg.Name), nats.Timeout(timeout)}, auth...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		if fatal := cfg.startError(RedactURLs(urls), err); fatal != nil {
			return nil, fatal
		}
		return nil, fmt.Errorf("connecting to NATS at %s: %w (check --nats and that the server runs)", RedactURLs(urls), err)
	}
	return nc, nil
}

// Conn is a NATS connection that says why the client gave it up, if it
// did: it tells a refusal of the credentials that ends the run from an
// outage that it waits out.
type Conn struct {
	*nats.Conn
	urls       string // redacted
	creds      string // the credential flags given, never their values
	cancel     context.CancelCauseFunc
	closing    atomic.Bool // Close was called: the close is ours, not a loss
	refusalGap time.Duration

	mu          sync.Mutex
	refusal     []error // the server's refusals since the last connection, in order
	refusals    int     // refusals in a row (see giveUpRefusals)
	lastRefusal time.Time
}

// Close closes the connection and releases the work context of Dial.
func (c *Conn) Close() {
	c.closing.Store(true)
	c.Conn.Close()
	c.cancel(nil)
}

// asyncError notes the server's refusals of the credentials, and closes nc
// (the client's connection) after giveUpRefusals of them in a row.
func (c *Conn) asyncError(nc *nats.Conn, err error) {
	if err = authRefusal(err); err == nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	c.refusal = appendDistinct(c.refusal, err)
	if now.Sub(c.lastRefusal) > c.refusalGap {
		c.refusals = 0
	}
	c.refusals++
	c.lastRefusal = now
	giveUp := c.refusals >= giveUpRefusals
	c.mu.Unlock()
	if giveUp {
		nc.Close() // the ClosedHandler reports the loss
	}
}

func (c *Conn) reconnected() {
	c.mu.Lock()
	c.refusal = nil
	c.mu.Unlock()
}

// closed runs when the client has closed the connection: unless Close did,
// it cancels the work context with the reason and returns it.
func (c *Conn) closed(last error) *LostError {
	if c.closing.Load() {
		return nil
	}
	c.mu.Lock()
	errs := c.refusal
	c.mu.Unlock()
	if refusal := authRefusal(last); refusal != nil {
		last = refusal
	}
	if last == nil && len(errs) == 0 {
		last = nats.ErrConnectionClosed
	}
	lost := &LostError{urls: c.urls, creds: c.creds, errs: appendDistinct(errs, last)}
	c.cancel(lost)
	return lost
}

// appendDistinct appends err to errs unless it is nil or the last one.
func appendDistinct(errs []error, err error) []error {
	if err == nil || (len(errs) > 0 && errs[len(errs)-1].Error() == err.Error()) {
		return errs
	}
	return append(errs[:len(errs):len(errs)], err)
}

// LostError says why the client gave a NATS connection up for good.
type LostError struct {
	urls  string
	creds string
	errs  []error // the refusals that led to it, oldest first, then the last error
}

func (e *LostError) Error() string {
	causes := make([]string, len(e.errs))
	refused := false
	for i, err := range e.errs {
		causes[i] = strings.TrimPrefix(err.Error(), "nats: ")
		refused = refused || AuthRefused(err)
	}
	cause := strings.Join(causes, ", then ")
	if refused {
		return fmt.Sprintf("NATS at %s refused the credentials%s: %s; check that the user and its account are known to the server, not expired and not revoked (or renew the credentials), then restart",
			e.urls, e.creds, cause)
	}
	return fmt.Sprintf("the NATS client gave up the connection to %s: %s; fix the cause, then restart", e.urls, cause)
}

func (e *LostError) Unwrap() []error { return e.errs }

// Lost returns why the connection was lost for good if that is what
// cancelled ctx, a work context of Dial; nil otherwise.
func Lost(ctx context.Context) error {
	var lost *LostError
	if errors.As(context.Cause(ctx), &lost) {
		return lost
	}
	return nil
}

// AuthRefused reports whether err is the server's refusal of the client's
// credentials.
func AuthRefused(err error) bool { return authRefusal(err) != nil }

// authRefusal returns nats.go's error for the server's refusal of the
// credentials that err is (the server's own wording varies in case), or nil.
func authRefusal(err error) error {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, e) {
			return e
		}
	}
	return nil
}

// RedactURLs hides passwords embedded in URLs (nats://user:pass@host).
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "[REDACTED]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}
