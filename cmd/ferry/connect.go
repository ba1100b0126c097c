package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// natsFlags are the connection flags every command that talks to NATS takes,
// named as the nats CLI names them.
type natsFlags struct {
	urls      string
	user      string
	password  string
	token     string
	creds     string
	nkey      string
	tlsCA     string
	tlsCert   string
	tlsKey    string
	name      string
	reconnect time.Duration
}

func addNATSFlags(fs *flag.FlagSet, name string) *natsFlags {
	f := &natsFlags{name: name}
	fs.StringVar(&f.urls, "nats", nats.DefaultURL, "NATS server URLs, comma separated")
	fs.StringVar(&f.user, "user", "", "NATS user name")
	fs.StringVar(&f.password, "password", "", "NATS password (prefer FERRY_PASSWORD)")
	fs.StringVar(&f.token, "token", "", "NATS token (prefer FERRY_TOKEN)")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials file (JWT + nkey seed)")
	fs.StringVar(&f.nkey, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&f.tlsCA, "tlsca", "", "CA certificate file to verify the NATS servers")
	fs.StringVar(&f.tlsCert, "tlscert", "", "client certificate file for TLS")
	fs.StringVar(&f.tlsKey, "tlskey", "", "client private key file for TLS")
	fs.DurationVar(&f.reconnect, "reconnect-wait", time.Second, "wait between reconnection attempts")
	return f
}

// connect dials NATS and keeps reconnecting forever: a shipper or receiver
// outlives any outage. Secrets are never logged.
//
// It also returns a child of ctx for the work done over the connection. The
// client gives the connection up for good when a server refuses the
// credentials twice in a row while it reconnects (a user JWT that expired
// while running, a user revoked, a server restarted without the account),
// and so does natsConn after giveUpRefusals refusals in a row; then that
// context is cancelled with a *connLostError cause (see connLost), so that
// the command stops its work cleanly and exits non-zero for its supervisor
// to restart or alert on, instead of waiting on a dead connection. Outages
// are waited out as before. Close releases the context.
func (f *natsFlags) connect(ctx context.Context, log *slog.Logger) (*natsConn, context.Context, error) {
	auth, err := f.authOptions()
	if err != nil {
		return nil, nil, err
	}
	urls := strings.TrimSpace(f.urls)
	c := &natsConn{urls: redactURLs(urls), creds: f.credentialsUsed(), refusalGap: refusalGap}
	ctx, c.cancel = context.WithCancelCause(ctx)
	opts := []nats.Option{
		nats.Name(f.name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(f.reconnect),
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
	// A first attempt without retries: a server that refuses the credentials
	// is a configuration error to report now, not an outage to wait out.
	// (With RetryOnFailedConnect the refusal is retried silently, and after
	// two refusals the client closes the connection for good.) A failed
	// nats.Connect calls none of the handlers.
	nc, err := nats.Connect(urls, append(opts, nats.RetryOnFailedConnect(false))...)
	if err != nil && authRefused(err) {
		c.cancel(nil)
		return nil, nil, fmt.Errorf("connecting to NATS at %s: the server refused the credentials%s: %w (check that the user and its account are known to the server and not expired or revoked)",
			c.urls, c.creds, err)
	}
	if err != nil {
		log.Warn("NATS not reachable yet; retrying in the background", "nats", c.urls, "err", err)
		if nc, err = nats.Connect(urls, opts...); err != nil {
			c.cancel(nil)
			return nil, nil, fmt.Errorf("connecting to NATS at %s: %w", c.urls, err)
		}
	}
	c.Conn = nc
	return c, ctx, nil
}

// giveUpRefusals refusals of the credentials in a row, each at most
// refusalGap after the one before, end the connection even if the server
// accepted the reconnections in between (nats.go gives up by itself only on
// the same refusal twice in a row while reconnecting).
const (
	giveUpRefusals = 5
	refusalGap     = 30 * time.Second
)

// natsConn is a NATS connection that says why the client gave it up, if it
// did: it tells a refusal of the credentials that ends the command from an
// outage that it waits out.
type natsConn struct {
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

// Close closes the connection and releases the work context of connect.
func (c *natsConn) Close() {
	c.closing.Store(true)
	c.Conn.Close()
	c.cancel(nil)
}

// asyncError notes the server's refusals of the credentials, and closes nc
// (the client's connection) after giveUpRefusals of them in a row.
func (c *natsConn) asyncError(nc *nats.Conn, err error) {
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

func (c *natsConn) reconnected() {
	c.mu.Lock()
	c.refusal = nil
	c.mu.Unlock()
}

// closed runs when the client has closed the connection: unless Close did,
// it cancels the work context with the reason and returns it.
func (c *natsConn) closed(last error) *connLostError {
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
	lost := &connLostError{urls: c.urls, creds: c.creds, errs: appendDistinct(errs, last)}
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

// connLostError says why the client gave a NATS connection up for good.
type connLostError struct {
	urls  string
	creds string
	errs  []error // the refusals that led to it, oldest first, then the last error
}

func (e *connLostError) Error() string {
	causes := make([]string, len(e.errs))
	refused := false
	for i, err := range e.errs {
		causes[i] = strings.TrimPrefix(err.Error(), "nats: ")
		refused = refused || authRefused(err)
	}
	cause := strings.Join(causes, ", then ")
	if refused {
		return fmt.Sprintf("NATS at %s refused the credentials%s: %s; check that the user and its account are known to the server, not expired and not revoked (or renew the credentials), then restart",
			e.urls, e.creds, cause)
	}
	return fmt.Sprintf("the NATS client gave up the connection to %s: %s; fix the cause, then restart", e.urls, cause)
}

func (e *connLostError) Unwrap() []error { return e.errs }

// connLost returns why the connection was lost for good if that is what
// cancelled ctx, a work context of connect; nil otherwise.
func connLost(ctx context.Context) error {
	var lost *connLostError
	if errors.As(context.Cause(ctx), &lost) {
		return lost
	}
	return nil
}

// authRefused reports whether the server refused the client's credentials.
func authRefused(err error) bool { return authRefusal(err) != nil }

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

// credentialsUsed names the credential flags given, for error messages
// (the flags, never their secret values).
func (f *natsFlags) credentialsUsed() string {
	var used []string
	if f.user != "" {
		used = append(used, "--user "+f.user)
	}
	if f.token != "" {
		used = append(used, "--token")
	}
	if f.creds != "" {
		used = append(used, "--creds "+f.creds)
	}
	if f.nkey != "" {
		used = append(used, "--nkey "+f.nkey)
	}
	if f.tlsCert != "" {
		used = append(used, "--tlscert "+f.tlsCert)
	}
	if len(used) == 0 {
		return " (no credentials given)"
	}
	return " (" + strings.Join(used, ", ") + ")"
}

// redactURLs hides passwords embedded in URLs (nats://user:pass@host).
func redactURLs(urls string) string {
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

// checkCredsFile checks that a .creds file holds a user JWT and a user nkey
// seed, so that a wrong file is reported by name at start instead of as a
// refusal by the server. The errors never quote the file's content.
func checkCredsFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading NATS credentials file (--creds): %w", err)
	}
	defer clear(b)
	bad := func(what string) error {
		return fmt.Errorf("NATS credentials file %s (--creds): %s; want the .creds file nsc or your NATS operator generates (a user JWT and a user nkey seed between ----- markers)", path, what)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return bad(fmt.Sprintf("no user nkey seed found (%v)", err))
	}
	kp.Wipe()
	tok, err := nkeys.ParseDecoratedJWT(b)
	if err != nil || strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \t\r\n") {
		return bad("no user JWT found")
	}
	return nil
}

// authOptions turns the security flags into connection options.
func (f *natsFlags) authOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if f.user != "" {
		opts = append(opts, nats.UserInfo(f.user, f.password))
	}
	if f.token != "" {
		opts = append(opts, nats.Token(f.token))
	}
	if f.creds != "" {
		if err := checkCredsFile(f.creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(f.creds)) // read again at each connect: the file may be rotated
	}
	if f.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(f.nkey)
		if err != nil {
			return nil, fmt.Errorf("reading nkey seed file %s: %w", f.nkey, err)
		}
		opts = append(opts, o)
	}
	if f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(f.tlsCA))
	}
	if f.tlsCert != "" || f.tlsKey != "" {
		if f.tlsCert == "" || f.tlsKey == "" {
			return nil, fmt.Errorf("--tlscert and --tlskey go together")
		}
		opts = append(opts, nats.ClientCert(f.tlsCert, f.tlsKey))
	}
	return opts, nil
}
