package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Options turns the security settings into connection options. It refuses
// settings that cannot work: a password without a user, a certificate
// without its key (or the reverse), a credentials or seed file that does
// not hold what it should.
func (c *Config) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.Password != "" && c.User == "" {
		return nil, errors.New("--password without --user: give the user name too (or put both in the URL, nats://USER:PASSWORD@HOST)")
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CredsFile != "" {
		if err := checkCredsFile(c.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile)) // read again at each connect: the file may be rotated
	}
	if c.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading nkey seed file %s (--nkey): %w", c.NkeyFile, err)
		}
		opts = append(opts, o)
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" || c.TLSKey != "" {
		if c.TLSCert == "" || c.TLSKey == "" {
			return nil, fmt.Errorf("--tlscert and --tlskey go together")
		}
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// credentialsUsed names the credential settings given, for error messages
// (the flags, never their secret values).
func (c *Config) credentialsUsed() string {
	var used []string
	if c.User != "" {
		used = append(used, "--user "+c.User)
	}
	if c.Token != "" {
		used = append(used, "--token")
	}
	if c.CredsFile != "" {
		used = append(used, "--creds "+c.CredsFile)
	}
	if c.NkeyFile != "" {
		used = append(used, "--nkey "+c.NkeyFile)
	}
	if c.TLSCert != "" {
		used = append(used, "--tlscert "+c.TLSCert)
	}
	if len(used) == 0 {
		return " (no credentials given)"
	}
	return " (" + strings.Join(used, ", ") + ")"
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

// startError returns the error to stop on when err, from a first
// connection attempt, shows that no retry can succeed without a change of
// configuration; nil for what may be an outage (refused or timed-out
// connections, names that do not resolve yet). urls is redacted.
func (c *Config) startError(urls string, err error) error {
	at := "connecting to NATS at " + urls
	if AuthRefused(err) {
		return fmt.Errorf("%s: the server refused the credentials%s: %w (check that the user and its account are known to the server and not expired or revoked)",
			at, c.credentialsUsed(), err)
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		uerr      *url.Error
		addr      *net.AddrError
		op        *net.OpError
	)
	ca := "the system's roots"
	if c.TLSCA != "" {
		ca = "--tlsca " + c.TLSCA
	}
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%s: TLS: the server's certificate is signed by an authority this client does not trust (checked against %s): give the CA that signed the server's certificate with --tlsca: %w",
			at, ca, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%s: TLS: the server's certificate is not valid for the host in --nats (%s): connect by a name or address the certificate holds: %w",
			at, hostname.Host, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%s: TLS: the server's certificate is not valid (expired, not yet valid or not for servers), checked against %s: %w", at, ca, err)
	case errors.As(err, &op) && op.Op == "remote error" && strings.Contains(op.Err.Error(), "tls:"),
		errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		// The server's TLS alert: it refused this client's certificate
		// (or the lack of one).
		if c.TLSCert == "" {
			return fmt.Errorf("%s: TLS: the server requires a client certificate and none was given: give --tlscert and --tlskey (a certificate the server's CA signed): %w", at, err)
		}
		return fmt.Errorf("%s: TLS: the server refused the client certificate --tlscert %s (signed by a CA it does not trust, expired, or not for clients): %w", at, c.TLSCert, err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("%s: TLS settings were given (--tlsca, --tlscert) but the server does not offer TLS: drop them, or check that --nats names the TLS-enabled server: %w", at, err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("%s: the server requires TLS: give --tlsca (and --tlscert/--tlskey if it verifies clients): %w", at, err)
	case errors.As(err, &record), errors.Is(err, nats.ErrNoInfoReceived), strings.Contains(err.Error(), "expected 'INFO'"):
		return fmt.Errorf("%s: what answers there is not a NATS server (check that --nats names the NATS client port, 4222 by default, not a monitoring or HTTP port): %w", at, err)
	case errors.Is(err, nats.ErrTLS):
		return fmt.Errorf("%s: TLS handshake failed (check --tlsca, --tlscert, --tlskey and --nats): %w", at, err)
	case errors.As(err, &uerr), errors.As(err, &addr):
		return fmt.Errorf("%s: --nats is not a list of URLs like nats://HOST:4222: %w", at, err)
	}
	return nil
}
