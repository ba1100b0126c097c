package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// operatorSetup is a NATS server in operator (decentralized JWT) mode with
// one account that may use JetStream.
type operatorSetup struct {
	srv     *server.Server
	account nkeys.KeyPair // signs the account's users
}

// startOperatorServer starts an embedded nats-server trusting a fresh
// operator, with one JetStream-enabled account preloaded in a memory
// resolver (plus the system account), on a free loopback port.
func startOperatorServer(t *testing.T) *operatorSetup {
	t.Helper()
	o := newOperatorSetup(t, -1)
	o.start(t)
	return o
}

// newOperatorSetup prepares the server of startOperatorServer on port
// without starting it.
func newOperatorSetup(t *testing.T, port int) *operatorSetup {
	t.Helper()
	op := mustKP(t, nkeys.CreateOperator)
	opPub, _ := op.PublicKey()
	opc := jwt.NewOperatorClaims(opPub)
	opc.Name = "ferry-test-operator"
	opJWT, err := opc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	account := func(name string, js bool) (nkeys.KeyPair, string) {
		kp := mustKP(t, nkeys.CreateAccount)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		tok, err := ac.Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		if err := resolver.Store(pub, tok); err != nil {
			t.Fatal(err)
		}
		return kp, pub
	}
	_, sysPub := account("SYS", false)
	appKP, _ := account("APP", true)
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver,
		SystemAccount: sysPub})
	if err != nil {
		t.Fatal(err)
	}
	return &operatorSetup{srv: s, account: appKP}
}

func (o *operatorSetup) start(t *testing.T) {
	t.Helper()
	go o.srv.Start()
	if !o.srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(o.srv.Shutdown)
}

func mustKP(t *testing.T, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// userCreds writes a .creds file for a new user signed by signer, after
// edit has adjusted its claims, and returns its path, JWT and seed.
func userCreds(t *testing.T, signer nkeys.KeyPair, edit func(*jwt.UserClaims)) (path, token string, seed []byte) {
	t.Helper()
	u := mustKP(t, nkeys.CreateUser)
	pub, _ := u.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "ferry"
	if edit != nil {
		edit(uc)
	}
	token, err := uc.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = u.Seed()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, token, seed
}

// startFerry runs the ferry binary with args, its output going to a log
// file, and kills it when the test ends. log reads what it wrote so far.
func startFerry(t *testing.T, args ...string) (cmd *exec.Cmd, log func() string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), args[0]+".log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(buildFerry(t), args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
	})
	return cmd, func() string { b, _ := os.ReadFile(path); return string(b) }
}

// runFerryProcess runs the ferry binary to completion (at most 15 s) and
// returns its combined output and error.
func runFerryProcess(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, buildFerry(t), args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("ferry %s still running after 15 s:\n%s", args[0], out)
	}
	return string(out), err
}

// TestCredsShipReceive ships transactions and applies them with both ends
// logging in with a .creds file (user JWT + nkey seed) to a server in
// operator mode, and checks that the seed never reaches the logs.
func TestCredsShipReceive(t *testing.T) {
	o := startOperatorServer(t)
	good, token, seed := userCreds(t, o.account, nil)
	url := o.srv.ClientURL()
	if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("server accepted a client without credentials")
	}

	const n = 20
	dir := t.TempDir()
	writeSource(t, dir, "orders", n)
	_, shipLog := startFerry(t, "ship", "--dir", dir, "--source", "orders", "--nats", url, "--creds", good, "--log-level", "debug")
	addr := freeAddr(t)
	base := "http://" + addr
	_, recvLog := startFerry(t, "receive", "--data", t.TempDir(), "--http", addr, "--nats", url, "--creds", good, "--log-level", "debug")

	applied := uint64(0)
	for deadline := time.Now().Add(15 * time.Second); applied < n && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st, err := receiverStatusOf(base); err == nil && len(st.Sources) == 1 {
			applied = st.Sources[0].Changes
		}
	}
	if applied != n {
		t.Fatalf("receiver applied %d changes, want %d\nship:\n%s\nreceive:\n%s", applied, n, shipLog(), recvLog())
	}
	for _, key := range []int{0, n / 2, n - 1} {
		resp, err := http.Get(fmt.Sprintf("%s/v1/tables/t/rows/%d", base, key))
		if err != nil {
			t.Fatal(err)
		}
		var row api.RowJSON
		err = json.NewDecoder(resp.Body).Decode(&row)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET row %d: status %d, %v", key, resp.StatusCode, err)
		}
		if want := fmt.Sprintf(`"i":%d,`, key); row.Version.Source != "orders" || !strings.Contains(string(row.Value), want) {
			t.Fatalf("row %d = %+v, want source orders and a value holding %s", key, row, want)
		}
	}
	for name, log := range map[string]string{"ship": shipLog(), "receive": recvLog()} {
		if strings.Contains(log, string(seed)) || strings.Contains(log, token) {
			t.Fatalf("ferry %s logged the creds file's seed or JWT:\n%s", name, log)
		}
	}
}

// TestCredsRefused gives ship and receive a well-formed .creds file the
// server refuses: they stop at once with an error saying so and naming the
// file, without the seed or the JWT.
func TestCredsRefused(t *testing.T) {
	o := startOperatorServer(t)
	stranger := mustKP(t, nkeys.CreateAccount) // an account the server does not know
	cases := []struct {
		name   string
		signer nkeys.KeyPair
		edit   func(*jwt.UserClaims)
	}{
		{"UnknownAccount", stranger, nil},
		{"ExpiredUser", o.account, func(uc *jwt.UserClaims) {
			uc.IssuedAt = time.Now().Add(-2 * time.Hour).Unix()
			uc.Expires = time.Now().Add(-time.Hour).Unix()
		}},
	}
	for _, tc := range cases {
		creds, token, seed := userCreds(t, tc.signer, tc.edit)
		for _, cmd := range [][]string{
			{"ship", "--dir", t.TempDir(), "--source", "orders"},
			{"receive", "--data", t.TempDir(), "--http", freeAddr(t)},
		} {
			t.Run(tc.name+"/"+cmd[0], func(t *testing.T) {
				out, err := runFerryProcess(t, append(cmd, "--nats", o.srv.ClientURL(), "--creds", creds)...)
				if err == nil {
					t.Fatalf("ferry %s succeeded with refused credentials:\n%s", cmd[0], out)
				}
				for _, want := range []string{"refused the credentials", "authorization violation", "--creds " + creds} {
					if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
						t.Errorf("output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, string(seed)) || strings.Contains(out, token) {
					t.Fatalf("the seed or the JWT appears in the output:\n%s", out)
				}
			})
		}
	}
}

// TestCredsFileUnusable gives ship and receive a .creds file that is
// missing or is not a creds file: the error names the file.
func TestCredsFileUnusable(t *testing.T) {
	o := startOperatorServer(t)
	good, token, seed := userCreds(t, o.account, nil)
	goodText, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	jwtOnly := strings.Split(string(goodText), "************************* IMPORTANT *************************")[0]
	cases := []struct {
		name, path, want string
	}{
		{"Missing", filepath.Join(t.TempDir(), "missing.creds"), "no such file"},
		{"Garbage", writeFile(t, "garbage.creds", "this is not a creds file\n"), "no user nkey seed found"},
		{"SeedOnly", writeFile(t, "seed.creds", string(seed)+"\n"), "no user JWT found"},
		{"JWTOnly", writeFile(t, "jwt.creds", jwtOnly), "no user nkey seed found"},
	}
	for _, tc := range cases {
		for _, cmd := range [][]string{
			{"ship", "--dir", t.TempDir(), "--source", "orders"},
			{"receive", "--data", t.TempDir(), "--http", freeAddr(t)},
		} {
			t.Run(tc.name+"/"+cmd[0], func(t *testing.T) {
				out, err := runFerryProcess(t, append(cmd, "--nats", o.srv.ClientURL(), "--creds", tc.path)...)
				if err == nil {
					t.Fatalf("ferry %s succeeded with an unusable creds file:\n%s", cmd[0], out)
				}
				for _, want := range []string{tc.path, "--creds", tc.want} {
					if !strings.Contains(out, want) {
						t.Errorf("output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, string(seed)) || strings.Contains(out, token) {
					t.Fatalf("the seed or the JWT appears in the output:\n%s", out)
				}
			})
		}
	}
}

// TestCredsServerLate starts two shippers before the server: the one with
// good credentials waits for the server and ships; the one whose
// credentials the server refuses exits non-zero once the server is up,
// saying so and naming the creds file.
func TestCredsServerLate(t *testing.T) {
	addr, port := freePort(t)
	o := newOperatorSetup(t, port)
	url := "nats://" + addr
	good, _, _ := userCreds(t, o.account, nil)
	refused, _, _ := userCreds(t, mustKP(t, nkeys.CreateAccount), nil)

	dir := t.TempDir()
	end := writeSource(t, dir, "orders", 20)
	ship := func(creds string) (<-chan error, func() string) {
		cmd, log := startFerry(t, "ship", "--dir", dir, "--source", "orders", "--nats", url, "--creds", creds, "--reconnect-wait", "100ms")
		return waitChan(cmd), log
	}
	_, goodLog := ship(good)
	refusedExit, refusedLog := ship(refused)
	waitLog := func(log func() string, want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(log(), want); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the log never said %q:\n%s", want, log())
			}
		}
	}
	waitLog(goodLog, "NATS not reachable yet")
	waitLog(refusedLog, "NATS not reachable yet")
	o.start(t)

	nc, err := nats.Connect(url, nats.UserCredentials(good))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for shipped := false; !shipped; time.Sleep(50 * time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatalf("nothing shipped once the server came up:\n%s", goodLog())
		}
		if st, err := js.Stream(ctx, "FERRY"); err == nil {
			if m, err := st.GetLastMsgForSubject(ctx, "ferry.orders"); err == nil {
				b, err := wire.ParseHeader(m.Header)
				shipped = err == nil && b.Segment == end.Segment && b.To == end.Offset
			}
		}
	}
	select {
	case err := <-refusedExit:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
			t.Fatalf("the shipper with refused credentials exited with %v, want a non-zero status:\n%s", err, refusedLog())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the shipper with refused credentials still runs:\n%s", refusedLog())
	}
	for _, want := range []string{"refused the credentials", "authorization violation", "--creds " + refused} {
		if !strings.Contains(refusedLog(), want) {
			t.Errorf("the refused shipper's output lacks %q:\n%s", want, refusedLog())
		}
	}
}

// writeFile writes content to a new file name in a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
