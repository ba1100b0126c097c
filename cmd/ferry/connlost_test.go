package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestCredsLostWhileRunning runs ship and receive with a .creds file the
// server accepts, lets them ship and apply everything, then has the server
// refuse the credentials for good while they run: the user JWT expires, the
// user is revoked in the account JWT, or the server restarts (same port)
// trusting other accounts. Both commands must stop on their own, exit
// non-zero with an error naming the cause and the --creds file (never the
// seed or the JWT), and leave their state intact: the receiver's store
// reopens with the source's position at the end of what was shipped and
// every change counted once; the shipper's checkpoint is at that end too.
func TestCredsLostWhileRunning(t *testing.T) {
	cases := []struct {
		name string
		// expires is the life of the user JWT (0: it does not expire).
		expires time.Duration
		// refuse makes the server refuse the user from now on (nil: the
		// expiry does it).
		refuse func(t *testing.T, o *operatorSetup, port int, seed []byte)
		want   string // the cause the error names
	}{
		{name: "UserExpired", expires: 6 * time.Second, want: "): authentication expired"},
		{name: "UserRevoked", refuse: revokeUser, want: "): authentication revoked"},
		{name: "ServerRestartedWithOtherAccounts", want: "): authorization violation; check", refuse: func(t *testing.T, o *operatorSetup, port int, _ []byte) {
			o.srv.Shutdown()
			o.srv.WaitForShutdown()
			newOperatorSetup(t, port).start(t) // another operator: the user's account is unknown to it
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Build before minting anything: the first build of the
			// package can take longer than a short-lived JWT lives.
			buildFerry(t)
			var (
				o                     *operatorSetup
				url, creds, token     string
				seed                  []byte
				port                  int
				dir, data             string
				end                   format.Position
				exits                 map[string]<-chan error
				logs                  map[string]func() string
				shipLog, recvLog      func() string
				ship, recv            *exec.Cmd
				expires               = tc.expires
				applied               uint64
				expiresAt             time.Time
				tooSlow, everyApplied bool
			)
			const n = 20
			// An expiring JWT must outlive the start of both commands and
			// the apply of everything: on a machine too slow for its
			// life, start again with a JWT living twice as long.
			for attempt := 1; ; attempt++ {
				var addr string
				addr, port = freePort(t)
				o = newOperatorSetup(t, port)
				o.start(t)
				url = "nats://" + addr
				expiresAt = time.Time{}
				creds, token, seed = userCreds(t, o.account, func(uc *jwt.UserClaims) {
					if expires > 0 {
						expiresAt = time.Now().Add(expires)
						uc.Expires = expiresAt.Unix()
					}
				})
				dir, data = t.TempDir(), t.TempDir()
				end = writeSource(t, dir, "orders", n)
				ship, shipLog = startFerry(t, "ship", "--dir", dir, "--source", "orders", "--nats", url, "--creds", creds, "--reconnect-wait", "100ms")
				httpAddr := freeAddr(t)
				recv, recvLog = startFerry(t, "receive", "--data", data, "--http", httpAddr, "--nats", url, "--creds", creds, "--reconnect-wait", "100ms")
				exits = map[string]<-chan error{"ship": waitChan(ship), "receive": waitChan(recv)}
				logs = map[string]func() string{"ship": shipLog, "receive": recvLog}

				// Both work while the credentials are good.
				applied = 0
				for deadline := time.Now().Add(60 * time.Second); applied < n && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					if st, err := receiverStatusOf("http://" + httpAddr); err == nil && len(st.Sources) == 1 {
						applied = st.Sources[0].Changes
					}
					if !expiresAt.IsZero() && time.Now().After(expiresAt) {
						break
					}
				}
				everyApplied = applied == n
				tooSlow = !expiresAt.IsZero() && time.Now().After(expiresAt)
				if !tooSlow || attempt == 5 {
					break
				}
				t.Logf("attempt %d: %d of %d changes applied when the %v JWT expired; again with a %v JWT", attempt, applied, n, expires, 2*expires)
				ship.Process.Kill()
				recv.Process.Kill()
				expires *= 2
			}
			if !everyApplied {
				t.Fatalf("receiver applied %d changes, want %d\nship:\n%s\nreceive:\n%s", applied, n, shipLog(), recvLog())
			}
			if tooSlow {
				t.Fatalf("everything applied only after the JWT expired (machine too slow for a %v JWT)", expires)
			}
			for name, exit := range exits {
				select {
				case err := <-exit:
					t.Fatalf("ferry %s exited before the credentials were refused: %v\n%s", name, err, logs[name]())
				default:
				}
			}

			if tc.refuse != nil {
				tc.refuse(t, o, port, seed)
			}
			for name, exit := range exits {
				var err error
				select {
				case err = <-exit:
				case <-time.After(20 * time.Second):
					t.Fatalf("ferry %s still running 20 s after the server refused its credentials:\n%s", name, logs[name]())
				}
				out := logs[name]()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
					t.Fatalf("ferry %s exited with %v, want a non-zero status:\n%s", name, err, out)
				}
				for _, want := range []string{"ferry: ferry " + name + ": NATS at " + url + " refused the credentials (--creds " + creds + "): ", tc.want, "then restart"} {
					if !strings.Contains(out, want) {
						t.Errorf("ferry %s output lacks %q:\n%s", name, want, out)
					}
				}
				if strings.Contains(out, string(seed)) || strings.Contains(out, token) {
					t.Fatalf("ferry %s wrote the seed or the JWT:\n%s", name, out)
				}
			}

			// The receiver closed its store normally: everything applied
			// is there, with its position, once.
			st, err := store.Open(filepath.Join(data, receiver.StoreDir))
			if err != nil {
				t.Fatalf("reopening the receiver's store: %v", err)
			}
			defer st.Close()
			if p := st.Position("orders"); p.Segment != end.Segment || p.Offset != end.Offset || p.Changes != n {
				t.Fatalf("store position after the exit = segment %d offset %d, %d changes; want segment %d offset %d, %d changes",
					p.Segment, p.Offset, p.Changes, end.Segment, end.Offset, n)
			}
			// The shipper saved its checkpoint at the end of what it shipped.
			b, err := os.ReadFile(filepath.Join(dir, "orders.ship-checkpoint"))
			if err != nil {
				t.Fatal(err)
			}
			var cp struct {
				Segment uint64 `json:"segment"`
				Offset  int64  `json:"offset"`
			}
			if err := json.Unmarshal(b, &cp); err != nil || cp.Segment != end.Segment || cp.Offset != end.Offset {
				t.Fatalf("shipper checkpoint %s (%v), want segment %d offset %d", b, err, end.Segment, end.Offset)
			}
		})
	}
}

// TestCredsRevokedMidStream revokes the user of ship and receive while a
// writer keeps committing and both are busy: they exit non-zero; restarted
// with another user of the account, they ship and apply the rest, and every
// change is applied exactly once (the receiver's count of applied changes
// equals what was written when its position reaches the end of the source).
func TestCredsRevokedMidStream(t *testing.T) {
	o := startOperatorServer(t)
	url := o.srv.ClientURL()
	first, _, firstSeed := userCreds(t, o.account, nil)
	second, _, _ := userCreds(t, o.account, nil)
	dir, data := t.TempDir(), t.TempDir()

	w, err := format.OpenWriter(dir, "orders", format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Uint64
	stop, writerDone := make(chan struct{}), make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- w.Close()
				return
			default:
			}
			tx := &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{{Table: "t", Op: format.OpUpsert,
				Key: []byte(fmt.Sprint(i)), After: []byte(fmt.Sprintf(`{"i":%d,"s":"%s"}`, i, strings.Repeat("v", 100)))}}}
			if _, err := w.Commit(tx); err != nil {
				writerDone <- err
				return
			}
			written.Add(1)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	var stopOnce sync.Once
	stopWriter := func() error {
		stopOnce.Do(func() { close(stop) })
		return <-writerDone
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopWriter()
		}
	}()

	run := func(creds string) (exits map[string]<-chan error, logs map[string]func() string, base string) {
		ship, shipLog := startFerry(t, "ship", "--dir", dir, "--source", "orders", "--nats", url, "--creds", creds, "--reconnect-wait", "100ms")
		httpAddr := freeAddr(t)
		recv, recvLog := startFerry(t, "receive", "--data", data, "--http", httpAddr, "--nats", url, "--creds", creds, "--reconnect-wait", "100ms")
		return map[string]<-chan error{"ship": waitChan(ship), "receive": waitChan(recv)},
			map[string]func() string{"ship": shipLog, "receive": recvLog}, "http://" + httpAddr
	}
	applied := func(base string) (api.SourceStatus, bool) {
		st, err := receiverStatusOf(base)
		if err != nil || len(st.Sources) != 1 {
			return api.SourceStatus{}, false
		}
		return st.Sources[0], true
	}

	// Busy: the receiver has applied some of a stream still growing.
	exits, logs, base := run(first)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s, ok := applied(base); ok && s.Changes >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver did not apply 300 changes in 15 s\nship:\n%s\nreceive:\n%s", logs["ship"](), logs["receive"]())
		}
	}
	revokeUser(t, o, 0, firstSeed)
	for name, exit := range exits {
		var err error
		select {
		case err = <-exit:
		case <-time.After(20 * time.Second):
			t.Fatalf("ferry %s still running 20 s after its user was revoked:\n%s", name, logs[name]())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() <= 0 || !strings.Contains(logs[name](), "): authentication revoked") {
			t.Fatalf("ferry %s exited with %v, want a non-zero status and an error naming the revocation:\n%s", name, err, logs[name]())
		}
	}
	st, err := store.Open(filepath.Join(data, receiver.StoreDir))
	if err != nil {
		t.Fatalf("reopening the receiver's store: %v", err)
	}
	before := st.Position("orders")
	st.Close()
	time.Sleep(100 * time.Millisecond) // the writer goes on meanwhile
	if err := stopWriter(); err != nil {
		t.Fatal(err)
	}
	total := written.Load()
	if before.Changes < 300 || before.Changes >= total {
		t.Fatalf("the first receiver applied %d changes; want at least 300 and fewer than the %d written", before.Changes, total)
	}
	segs, err := format.ListSegments(dir, "orders")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(segs[len(segs)-1].Path)
	if err != nil {
		t.Fatal(err)
	}
	end := format.Position{Segment: segs[len(segs)-1].Segment, Offset: fi.Size()}

	// Restarted with another user, they pick up where they stopped.
	_, logs, base = run(second)
	var s api.SourceStatus
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if s, ok = applied(base); ok && s.AppliedSegment == end.Segment && s.AppliedOffset == end.Offset {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted receiver is at %+v, want segment %d offset %d\nship:\n%s\nreceive:\n%s", s, end.Segment, end.Offset, logs["ship"](), logs["receive"]())
		}
	}
	t.Logf("%d changes written, %d applied before the revocation, all applied once after the restart", total, before.Changes)
	if s.Changes != total {
		t.Fatalf("the receiver applied %d changes in all, want the %d written exactly once (%d before the revocation)", s.Changes, total, before.Changes)
	}
}

// revokeUser revokes the user of seed in its account's JWT, as `nsc revocations
// add-user` and a push to the resolver do: the server disconnects it.
func revokeUser(t *testing.T, o *operatorSetup, _ int, seed []byte) {
	t.Helper()
	u, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	userPub, _ := u.PublicKey()
	accPub, _ := o.account.PublicKey()
	acc, err := o.srv.LookupAccount(accPub)
	if err != nil {
		t.Fatal(err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "APP"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ac.Revoke(userPub)
	o.srv.UpdateAccountClaims(acc, ac)
}

// waitChan waits for cmd in the background and delivers its exit.
func waitChan(cmd *exec.Cmd) <-chan error {
	c := make(chan error, 1)
	go func() { c <- cmd.Wait() }()
	return c
}
