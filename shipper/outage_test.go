package shipper_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/shipper"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	serverBinOnce sync.Once
	serverBin     string
	serverBinErr  error
	serverBinDir  string
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	if os.Getenv(liveWriterEnv) != "" {
		os.Exit(runLiveWriter())
	}
	code := m.Run()
	if serverBinDir != "" {
		os.RemoveAll(serverBinDir)
	}
	os.Exit(code)
}

// natsServerBinary builds nats-server from the module graph, once per run.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	serverBinOnce.Do(func() {
		serverBinDir, serverBinErr = os.MkdirTemp("", "ferry-nats-server-")
		if serverBinErr != nil {
			return
		}
		serverBin = filepath.Join(serverBinDir, "nats-server")
		out, err := exec.Command("go", "build", "-o", serverBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			serverBinErr = fmt.Errorf("building nats-server: %v\n%s", err, out)
		}
	})
	if serverBinErr != nil {
		t.Fatal(serverBinErr)
	}
	return serverBin
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverProc is a nats-server process on loopback.
type serverProc struct {
	bin, store string
	port       int
	cmd        *exec.Cmd
}

func (p *serverProc) start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "-js", "-sd", p.store, "-a", "127.0.0.1", "-p", fmt.Sprint(p.port))
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("nats-server did not listen")
}

// startServerProc starts a nats-server process on a fresh store and a free
// port; it is killed at the end of the test.
func startServerProc(t testing.TB) *serverProc {
	t.Helper()
	p := &serverProc{bin: natsServerBinary(t), store: t.TempDir(), port: freePort(t)}
	p.start(t)
	t.Cleanup(p.kill)
	return p
}

func (p *serverProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// connect connects to p as the shipper does (reconnecting forever, no
// reconnect buffer); the connection is closed at the end of the test.
func (p *serverProc) connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(p.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (p *serverProc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill() // SIGKILL: no shutdown, no flush
		p.cmd.Wait()
		p.cmd = nil
	}
}

// TestServerKilledMidRun kills the NATS server (kill -9) while the legacy
// writes and the shipper ships, keeps it down longer than the shipper's
// lease lives, and restarts it
// on the same store and port: the shipper reconnects and catches up, with
// every frame in the stream once and in order.
func TestServerKilledMidRun(t *testing.T) {
	p := startServerProc(t)
	nc := p.connect(t)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders", format.WithMaxSegmentSize(256<<10))
	r := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(32<<10))

	stopWriting := make(chan struct{})
	var written sync.WaitGroup
	written.Add(1)
	go func() {
		defer written.Done()
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				return
			default:
			}
			writeTxs(t, w, i*20, 20, 1, 200)
			w.Sync()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	p.kill()
	killedAt := r.s.Stats().Acked
	// The legacy keeps writing; the files are the buffer. The outage
	// outlasts the lease's TTL (2 s): the shipper takes its lease again.
	time.Sleep(2500 * time.Millisecond)
	if st := r.s.Stats(); st.Acked != killedAt && st.Acked.Less(killedAt) {
		t.Fatalf("acked went backwards while down: %v -> %v", killedAt, st.Acked)
	}
	p.start(t)
	time.Sleep(300 * time.Millisecond)
	close(stopWriting)
	written.Wait()
	w.Close()
	end := endOf(t, dir, "orders")
	r.waitAcked(t, end, 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if !killedAt.Less(end) {
		t.Fatalf("nothing written during the outage (killed at %v, end %v)", killedAt, end)
	}
	if got := r.s.Stats().Sessions; got < 2 {
		t.Errorf("%d sessions: the shipper did not notice the outage", got)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}

// TestStreamBehindAcked simulates a broker that lost acknowledged messages
// (acked before fsync, then a power cut): the shipper notices that the
// stream's tail is behind its checkpoint and re-ships from the real tail.
func TestStreamBehindAcked(t *testing.T) {
	p := startServerProc(t)
	nc := p.connect(t)
	c := newClient(t, nc)
	dir := t.TempDir()
	w := openWriter(t, dir, "orders")
	writeTxs(t, w, 0, 500, 1, 200)
	w.Close()
	end := endOf(t, dir, "orders")
	r := startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(8<<10))
	r.waitAcked(t, end, 10*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	// Lose the last five messages, and the server's memory of them (a
	// restart rebuilds the de-duplication window from what is stored).
	js, _ := jetstream.New(nc)
	st, err := js.Stream(t.Context(), "FERRY")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(t.Context())
	for seq := info.State.LastSeq; seq > info.State.LastSeq-5; seq-- {
		if err := st.DeleteMsg(t.Context(), seq); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	p.kill()
	p.start(t)
	nc = p.connect(t)
	c = newClient(t, nc)
	r = startShipper(t, c, dir, "orders", shipper.WithMaxBatchBytes(8<<10))
	r.waitAcked(t, end, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(readBack(t, nc, c.Subject("orders"))) < int(info.State.Msgs) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := r.s.Stats().Behind; got != 1 {
		t.Errorf("Stats.Behind = %d, want 1", got)
	}
	checkExact(t, dir, "orders", readBack(t, nc, c.Subject("orders")), end)
}
