package shipper_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
)

// helperEnv makes the test binary run a shipper instead of the tests (see
// TestMain): the process that TestRestartAfterKillTakesOwnLease kills.
const helperEnv = "FERRY_SHIPPER_TEST_HELPER"

// runHelper ships DIR's source "orders" to the server at URL until killed.
func runHelper() int {
	url, dir := os.Getenv(helperEnv), os.Getenv(helperEnv+"_DIR")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	// As ferry ship runs it: shipper.Group, stream-creation retry included.
	s, err := shipper.NewGroup(nc, jsclient.Config{LeaseTTL: time.Minute}, []shipper.SourceConfig{{Name: "orders", Dir: dir}}, shipper.WithPollInterval(50*time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestRestartAfterKillTakesOwnLease kills a shipper process with -9 while it
// holds its lease (TTL one minute): a shipper restarted on the same host and
// directory takes its own stale lease over at once and ships on, while a
// shipper with another identity is still refused.
func TestRestartAfterKillTakesOwnLease(t *testing.T) {
	p := &serverProc{bin: natsServerBinary(t), store: t.TempDir(), port: freePort(t)}
	p.start(t)
	t.Cleanup(p.kill)
	url := fmt.Sprintf("nats://127.0.0.1:%d", p.port)
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := jsclient.New(t.Context(), nc, jsclient.Config{LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 200, 1, 200)
	w.Sync()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+url, helperEnv+"_DIR="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := c.LastMsg(t.Context(), c.Subject("orders"))
		if err == nil && m != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the helper shipper shipped nothing (%v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill() // kill -9: the lease stays for a minute
	cmd.Wait()

	// Another shipper (another identity: its own checkpoint directory) is
	// refused while the lease lives.
	_, err = runOnce(t, c, dir, "orders", shipper.WithCheckpoint(filepath.Join(t.TempDir(), "orders.ship-checkpoint")))
	if !errors.Is(err, shipper.ErrSourceBusy) {
		t.Fatalf("another shipper: Run = %v, want ErrSourceBusy", err)
	}
	// The killed one, restarted, takes its own lease over at once.
	writeTxs(t, w, 200, 100, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders")
	r.waitAcked(t, end, 10*time.Second)
	// While it runs, a second one on the same directory is refused.
	if _, err := runOnce(t, c, dir, "orders"); !errors.Is(err, shipper.ErrSourceBusy) {
		t.Fatalf("second shipper on the same directory: Run = %v, want ErrSourceBusy", err)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}

// TestNoInstanceFileStillShips: where the instance file cannot be written
// (nor the checkpoint: a read-only or missing directory) the shipper ships
// anyway, only without the takeover.
func TestNoInstanceFileStillShips(t *testing.T) {
	_, nc := startServer(t, 0)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 50, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	// A checkpoint in a directory that does not exist: neither it nor the
	// instance file can be written.
	r := startShipper(t, c, dir, "orders", shipper.WithCheckpoint(filepath.Join(t.TempDir(), "missing", "orders.ship-checkpoint")))
	r.waitAcked(t, end, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}
