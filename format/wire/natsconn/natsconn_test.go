package natsconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer starts an embedded NATS server on a free loopback port.
func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// pki is a certificate authority and what it signed, as PEM files.
type pki struct {
	dir        string
	ca         *x509.Certificate
	caKey      *ecdsa.PrivateKey
	caFile     string
	serverCert string
	serverKey  string
	clientCert string
	clientKey  string
}

func newPKI(t *testing.T, name string, serverHosts ...string) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	if len(serverHosts) == 0 {
		serverHosts = []string{"127.0.0.1", "localhost"}
	}
	p.serverCert, p.serverKey = p.issue(t, "server", 2, x509.ExtKeyUsageServerAuth, serverHosts)
	p.clientCert, p.clientKey = p.issue(t, "client", 3, x509.ExtKeyUsageClientAuth, nil)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *pki) issue(t *testing.T, name string, serial int64, usage x509.ExtKeyUsage, hosts []string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

// tlsServer starts a NATS server with p's server certificate; with
// verifyClients it requires client certificates signed by p's CA.
func tlsServer(t *testing.T, p *pki, verifyClients bool) *server.Server {
	t.Helper()
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.caFile, Verify: verifyClients})
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, &server.Options{TLSConfig: cfg, TLSVerify: verifyClients, TLSTimeout: 10})
}

// TestDialConfigErrors dials real servers with settings that cannot work:
// each must fail at once, saying what is wrong and naming the flag to fix,
// instead of being retried as an outage. The right settings connect.
func TestDialConfigErrors(t *testing.T) {
	good := newPKI(t, "good")
	other := newPKI(t, "other")
	tlsSrv := tlsServer(t, good, false)
	elsewhere := newPKI(t, "elsewhere", "nats.example")
	elsewhereSrv := tlsServer(t, elsewhere, false)
	mtlsSrv := tlsServer(t, good, true)
	plain := startServer(t, &server.Options{})
	notNATS := fakeServer(t, "SSH-2.0-OpenSSH_9.2\r\n")

	cases := []struct {
		name string
		cfg  Config
		want []string // in the error; none: must connect
	}{
		{name: "TLSOK", cfg: Config{URLs: tlsSrv.ClientURL(), TLSCA: good.caFile}},
		{name: "MutualTLSOK", cfg: Config{URLs: mtlsSrv.ClientURL(), TLSCA: good.caFile, TLSCert: good.clientCert, TLSKey: good.clientKey}},
		{name: "UnknownCA", cfg: Config{URLs: tlsSrv.ClientURL()},
			want: []string{"authority this client does not trust", "system's roots", "--tlsca"}},
		{name: "WrongCA", cfg: Config{URLs: tlsSrv.ClientURL(), TLSCA: other.caFile},
			want: []string{"authority this client does not trust", "--tlsca " + other.caFile}},
		{name: "HostNotInCertificate", cfg: Config{URLs: elsewhereSrv.ClientURL(), TLSCA: elsewhere.caFile},
			want: []string{"not valid for the host in --nats"}},
		{name: "MissingClientCert", cfg: Config{URLs: mtlsSrv.ClientURL(), TLSCA: good.caFile},
			want: []string{"requires a client certificate", "--tlscert and --tlskey"}},
		{name: "ClientCertOfOtherCA", cfg: Config{URLs: mtlsSrv.ClientURL(), TLSCA: good.caFile, TLSCert: other.clientCert, TLSKey: other.clientKey},
			want: []string{"refused the client certificate", "--tlscert " + other.clientCert}},
		{name: "TLSAskedOfPlainServer", cfg: Config{URLs: plain.ClientURL(), TLSCA: good.caFile},
			want: []string{"does not offer TLS", "--tlsca"}},
		{name: "NotANATSServer", cfg: Config{URLs: "nats://" + notNATS},
			want: []string{"not a NATS server", "--nats"}},
		{name: "NotAnAddress", cfg: Config{URLs: "nats://127.0.0.1:42:22"},
			want: []string{"--nats is not a list of URLs"}},
		{name: "NotAURL", cfg: Config{URLs: "127.0.0.1:x"},
			want: []string{"--nats is not a list of URLs"}},
		{name: "PasswordWithoutUser", cfg: Config{URLs: plain.ClientURL(), Password: "x"},
			want: []string{"--password without --user"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = discard()
			c, _, err := Dial(context.Background(), tc.cfg)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				if !c.IsConnected() {
					t.Fatalf("status %v, want connected", c.Status())
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("Dial connected (or retries in the background), want an error saying %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Dial: %v\nwant it to say %q", err, w)
				}
			}
			// The one-shot dial says the same.
			if nc, err := DialOnce(tc.cfg, 0); err == nil || !strings.Contains(err.Error(), tc.want[0]) {
				if nc != nil {
					nc.Close()
				}
				t.Errorf("DialOnce: %v, want it to say %q", err, tc.want[0])
			}
		})
	}
}

// TestDialOutageWaitedOut: nothing listening at the URL is an outage, not a
// configuration error: Dial returns a connection that connects once the
// server is there.
func TestDialOutageWaitedOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	c, _, err := Dial(context.Background(), Config{URLs: "nats://" + addr.String(), ReconnectWait: 50 * time.Millisecond, Logger: discard()})
	if err != nil {
		t.Fatalf("Dial with the server down: %v, want a connection that retries", err)
	}
	defer c.Close()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: addr.Port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer s.Shutdown()
	for deadline := time.Now().Add(60 * time.Second); !c.IsConnected(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not connected once the server runs: %v", c.Status())
		}
	}
}

// fakeServer accepts connections and greets them with banner (something
// that is not NATS).
func fakeServer(t *testing.T, banner string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte(banner))
			go func() { io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestConnRefusalsInARow feeds a live connection the errors a server
// accepting each reconnection and then refusing the credentials again would
// cause: giveUpRefusals refusals in a row end the connection and cancel the
// work context with a cause naming the refusal; fewer, spread-out or other
// errors do not; closing it ourselves is no loss.
func TestConnRefusalsInARow(t *testing.T) {
	srv := startServer(t, &server.Options{})
	cases := []struct {
		name string
		errs []error
		gap  time.Duration // refusalGap
		wait time.Duration // between errors
		lost string        // "" : the connection must stay up
	}{
		{name: "InARow", errs: repeat(nats.ErrAuthExpired, giveUpRefusals), gap: time.Minute, lost: "refused the credentials (no credentials given): authentication expired; check"},
		{name: "OneShort", errs: repeat(nats.ErrAuthorization, giveUpRefusals-1), gap: time.Minute},
		{name: "SpreadOut", errs: repeat(nats.ErrAuthRevoked, giveUpRefusals), gap: 20 * time.Millisecond, wait: 60 * time.Millisecond},
		{name: "NotRefusals", errs: repeat(nats.ErrPermissionViolation, 2*giveUpRefusals), gap: time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, ctx, err := Dial(context.Background(), Config{URLs: srv.ClientURL(), Name: "test", Logger: discard()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.refusalGap = tc.gap
			for _, err := range tc.errs {
				c.asyncError(c.Conn, err)
				time.Sleep(tc.wait)
			}
			if tc.lost == "" {
				select {
				case <-ctx.Done():
					t.Fatalf("work context cancelled (%v), want the connection kept", context.Cause(ctx))
				case <-time.After(300 * time.Millisecond):
				}
				if !c.IsConnected() {
					t.Fatalf("connection status %v, want connected", c.Status())
				}
				c.Close()
				<-ctx.Done()
				if err := Lost(ctx); err != nil {
					t.Fatalf("our own Close reported as a loss: %v", err)
				}
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("work context not cancelled after the refusals")
			}
			if err := Lost(ctx); err == nil || !strings.Contains(err.Error(), tc.lost) || !errors.Is(err, tc.errs[0]) {
				t.Fatalf("loss %v, want one saying %q and wrapping %v", err, tc.lost, tc.errs[0])
			}
			if !c.IsClosed() {
				t.Fatalf("connection status %v, want closed", c.Status())
			}
		})
	}
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func TestRedactURLs(t *testing.T) {
	if got, want := RedactURLs("nats://u:secret@h1:4222,nats://h2:4222"), "nats://[REDACTED]@h1:4222,nats://h2:4222"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestOptions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.nk")
	tests := []struct {
		name    string
		cfg     Config
		options int
		err     string
	}{
		{"none", Config{}, 0, ""},
		{"user and token", Config{User: "u", Password: "p", Token: "t"}, 2, ""},
		{"tls", Config{TLSCA: "ca.pem", TLSCert: "c.pem", TLSKey: "k.pem"}, 2, ""},
		{"cert without key", Config{TLSCert: "c.pem"}, 0, "--tlscert and --tlskey go together"},
		{"password without user", Config{Password: "p"}, 0, "--password without --user"},
		{"unreadable nkey", Config{NkeyFile: missing}, 0, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.cfg.Options()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil || len(opts) != tt.options {
				t.Fatalf("%d options, err %v; want %d options", len(opts), err, tt.options)
			}
		})
	}
}
