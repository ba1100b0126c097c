package receiver_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The example permissions of deploy/nats-permissions.conf work: a shipper
// and a receiver run with their users and the rows arrive, while the
// receiver's user can publish on no source subject (nor delete the stream)
// and a shipper's user on no other source's subject.
func TestDeployedPermissions(t *testing.T) {
	opts, err := server.ProcessConfigFile("deploy/nats-permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", -1, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	var mu sync.Mutex
	asyncErrs := map[string][]error{}
	connect := func(user, pass string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, pass), nats.ReconnectBufSize(-1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			asyncErrs[user] = append(asyncErrs[user], err)
			mu.Unlock()
		}))
		if err != nil {
			t.Fatalf("connecting as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	shipNC := connect("ship-shop", "example-ship-shop-secret")
	recvNC := connect("receiver", "example-receiver-secret")

	dir := t.TempDir()
	w, err := format.OpenWriter(dir, "shop")
	if err != nil {
		t.Fatal(err)
	}
	txs := genTxs(200, 2, "t", "p")
	for i := range txs {
		if _, err := w.Commit(&txs[i]); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shp, err := shipper.NewFromConn(ctx, shipNC, jsclient.Config{}, dir, "shop")
	if err != nil {
		t.Fatalf("shipper with the ship-shop user: %v", err)
	}
	shipDone := make(chan error, 1)
	go func() { shipDone <- shp.Run(ctx) }()
	defer func() { cancel(); <-shipDone; w.Close() }()

	r, err := receiver.New(receiver.WithNATS(recvNC), receiver.WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("refusals: %v", asyncErrs)
			mu.Unlock()
		}
	})
	waitFor(t, "the receiver to apply every change", 20*time.Second, func() bool { return r.Positions()["shop"].Changes == 400 })
	for i := range txs {
		for _, c := range txs[i].Changes {
			row, ok, err := r.Store().Get(c.Table, c.Key)
			if err != nil || !ok || string(row.Value) != string(c.After) {
				t.Fatalf("row %s: ok %v err %v", c.Key, ok, err)
			}
		}
	}

	// The receiver's user cannot publish on a source subject.
	rjs, err := jetstream.New(recvNC)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = rjs.Publish(pctx, "ferry.shop", []byte("forged"))
	pcancel()
	if err == nil {
		t.Fatal("the receiver's user published on ferry.shop")
	}
	if err := recvNC.Publish("ferry.evil", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	recvNC.Flush()
	if err := rjs.DeleteStream(ctx, "FERRY"); err == nil {
		t.Fatal("the receiver's user deleted the stream")
	}
	// A shipper's user cannot publish on another source's subject.
	sjs, _ := jetstream.New(shipNC)
	pctx, pcancel = context.WithTimeout(ctx, 3*time.Second)
	_, err = sjs.Publish(pctx, "ferry.stock", []byte("forged"))
	pcancel()
	if err == nil {
		t.Fatal("ship-shop published on ferry.stock")
	}
	// Nothing forged reached the stream: only the shipper's messages.
	st, err := rjs.Stream(ctx, "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("ferry.>"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.State.Subjects["ferry.shop"]; len(info.State.Subjects) != 1 || !ok {
		t.Fatalf("stream subjects %v, want ferry.shop only", info.State.Subjects)
	}
	waitFor(t, "the permission violations reported", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, err := range asyncErrs["receiver"] {
			if errors.Is(err, nats.ErrPermissionViolation) {
				n++
			}
		}
		return n >= 2
	})
	mu.Lock()
	t.Logf("receiver user's refusals: %v", fmt.Sprint(asyncErrs["receiver"]))
	mu.Unlock()
}
