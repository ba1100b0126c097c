package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der, kder
	}
	sc, sk := leaf(2, x509.ExtKeyUsageServerAuth)
	cc, ck := leaf(3, x509.ExtKeyUsageClientAuth)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sc),
		serverKey:  write("server-key.pem", "EC PRIVATE KEY", sk),
		clientCert: write("client.pem", "CERTIFICATE", cc),
		clientKey:  write("client-key.pem", "EC PRIVATE KEY", ck),
	}
}

// TestShipAuthentication ships through servers that demand each kind of
// credential the nats CLI knows, and checks that no secret reaches the logs.
func TestShipAuthentication(t *testing.T) {
	p := newPKI(t)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		server  func(*server.Options)
		scheme  string
		args    []string
		secret  string             // must never be logged
		observe func() nats.Option // how the test itself gets in
	}{
		{"UserPassword", func(o *server.Options) { o.Username, o.Password = "shipper", "pa55-w0rd-xyz" }, "nats",
			[]string{"--user", "shipper", "--password", "pa55-w0rd-xyz"}, "pa55-w0rd-xyz",
			func() nats.Option { return nats.UserInfo("shipper", "pa55-w0rd-xyz") }},
		{"Token", func(o *server.Options) { o.Authorization = "t0ken-abc-123" }, "nats",
			[]string{"--token", "t0ken-abc-123"}, "t0ken-abc-123",
			func() nats.Option { return nats.Token("t0ken-abc-123") }},
		{"Nkey", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} }, "nats",
			[]string{"--nkey", seedFile}, string(seed),
			func() nats.Option {
				o, err := nats.NkeyOptionFromSeed(seedFile)
				if err != nil {
					t.Fatal(err)
				}
				return o
			}},
		{"MutualTLS", func(o *server.Options) {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = tc, true, true, 5
		}, "tls", []string{"--tlsca", p.ca, "--tlscert", p.clientCert, "--tlskey", p.clientKey}, "",
			func() nats.Option {
				return func(o *nats.Options) error {
					for _, opt := range []nats.Option{nats.RootCAs(p.ca), nats.ClientCert(p.clientCert, p.clientKey)} {
						if err := opt(o); err != nil {
							return err
						}
					}
					return nil
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
			tt.server(opts)
			s, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			go s.Start()
			if !s.ReadyForConnections(10 * time.Second) {
				t.Fatal("nats-server not ready")
			}
			t.Cleanup(s.Shutdown)
			url := tt.scheme + "://" + s.Addr().String()

			// Without the credentials the server says no: the test's server
			// really demands them.
			if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
				nc.Close()
				t.Fatal("server accepted a client without credentials")
			}

			dir := t.TempDir()
			end := writeSource(t, dir, "secure", 50)
			var stderr bytes.Buffer
			env := &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			args := append([]string{"ship", "--dir", dir, "--source", "secure", "--nats", url, "--log-level", "debug"}, tt.args...)
			go func() { errc <- run(ctx, env, args) }()

			nc, err := nats.Connect(url, tt.observe())
			if err != nil {
				t.Fatalf("test client: %v", err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			shipped := false
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !shipped; time.Sleep(20 * time.Millisecond) {
				if st, err := js.Stream(ctx, "FERRY"); err == nil {
					if m, err := st.GetLastMsgForSubject(ctx, "ferry.secure"); err == nil {
						b, err := wire.ParseHeader(m.Header)
						shipped = err == nil && b.Segment == end.Segment && b.To == end.Offset
					}
				}
			}
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("ferry ship: %v", err)
			}
			if !shipped {
				t.Fatalf("nothing shipped through %s:\n%s", tt.name, stderr.String())
			}
			if tt.secret != "" && strings.Contains(stderr.String(), tt.secret) {
				t.Fatalf("the secret appears in the log:\n%s", stderr.String())
			}
		})
	}
}

// A wrong password fails fast in a one-shot command, says so, and does not
// echo the password.
func TestStatusWrongPasswordNotEchoed(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, Username: "ops", Password: "right-one"})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	var out, errOut bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	err = run(context.Background(), env, []string{"status", "--nats", s.ClientURL(), "--user", "ops", "--password", "wr0ng-pa55"})
	if err == nil {
		t.Fatal("status with a wrong password succeeded")
	}
	msg := err.Error() + out.String() + errOut.String()
	if !strings.Contains(strings.ToLower(msg), "authorization") || strings.Contains(msg, "wr0ng-pa55") {
		t.Fatalf("want an authorization error without the password, got: %s", msg)
	}
}
