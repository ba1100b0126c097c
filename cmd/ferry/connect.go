package main

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
	}
	auth, err := f.authOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	urls := strings.TrimSpace(f.urls)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURLs(urls), err)
	}
	return nc, nil
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
		opts = append(opts, nats.UserCredentials(f.creds))
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
