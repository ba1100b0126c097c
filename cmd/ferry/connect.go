package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
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
func (f *natsFlags) connect(log *slog.Logger) (*nats.Conn, error) {
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
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS error", "err", err) }),
		// The client gives up for good when a server refuses the credentials
		// twice in a row: say why, or the agent just waits on a dead connection.
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Error("NATS connection closed for good; fix the cause and restart", "err", err)
			}
		}),
	}
	auth, err := f.authOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	urls := strings.TrimSpace(f.urls)
	// A first attempt without retries: a server that refuses the credentials
	// is a configuration error to report now, not an outage to wait out.
	// (With RetryOnFailedConnect the refusal is retried silently, and after
	// two refusals the client closes the connection for good.)
	nc, err := nats.Connect(urls, append(opts, nats.RetryOnFailedConnect(false))...)
	if err == nil {
		return nc, nil
	}
	if authRefused(err) {
		return nil, fmt.Errorf("connecting to NATS at %s: the server refused the credentials%s: %w (check that the user and its account are known to the server and not expired or revoked)",
			redactURLs(urls), f.credentialsUsed(), err)
	}
	log.Warn("NATS not reachable yet; retrying in the background", "nats", redactURLs(urls), "err", err)
	nc, err = nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURLs(urls), err)
	}
	return nc, nil
}

// authRefused reports whether the server refused the client's credentials.
func authRefused(err error) bool {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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
