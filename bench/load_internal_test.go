package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/faults"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// loadChildEnv, when set, makes the test binary a loader process (so that
// a test can kill -9 it): its value is a loadChild as JSON.
const loadChildEnv = "FERRY_BENCH_LOAD_CHILD"

// loadChild loads the workload's tables from URL into the stream at NATS,
// printing "CHUNK" after every acknowledged chunk.
type loadChild struct {
	URL, NATS string
	Versions  bool
	ChunkRows int
}

func loadChildMain(cfgJSON string) int {
	var c loadChild
	if err := json.Unmarshal([]byte(cfgJSON), &c); err != nil {
		fmt.Fprintln(os.Stderr, "load child config:", err)
		return 2
	}
	nc, err := nats.Connect(c.NATS, nats.ReconnectBufSize(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "load child:", err)
		return 1
	}
	defer nc.Close()
	cfg := load.Config{ChunkRows: c.ChunkRows, Progress: func(p load.Progress) { fmt.Printf("CHUNK %s %d\n", p.Table, p.Rows) }}
	if err := loadTables(context.Background(), nc, c.URL, c.Versions, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "load child:", err)
		return 1
	}
	fmt.Println("DONE")
	return 0
}

// loadTables loads every table of the retail schema, with stock's rev as
// its row version if versions (the other tables have none).
func loadTables(ctx context.Context, nc *nats.Conn, url string, versions bool, cfg load.Config) error {
	st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
	if err != nil {
		return err
	}
	for _, t := range workload.Tables() {
		tb := load.Table{Name: t.Name}
		if versions && t.RevColumn() >= 0 {
			tb.VersionColumn = "rev"
		}
		if _, err := load.Run(ctx, st, load.Input{PG: url}, tb, cfg); err != nil {
			return fmt.Errorf("loading %s: %w", t.Name, err)
		}
	}
	return nil
}

// listeningBroker is an embedded JetStream server that also listens on a
// loopback port, for processes (the loader child) to reach it.
func listeningBroker(t testing.TB) (*broker, string) {
	t.Helper()
	dir := t.TempDir()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded JetStream server not ready")
	}
	b := &broker{dir: dir, srv: srv}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return b, srv.ClientURL()
}

// loadSize is the initial rows of each of customers, products and orders
// (orders have 3 lines each): 6 x loadSize rows in all.
func loadSize() int {
	if os.Getenv("FERRY_FAULTS") == "full" {
		return 170_000 // 1,020,000 rows
	}
	return 6_000
}

// TestLoadWhileWriting loads the retail tables from PostgreSQL while 8
// legacy workers update and delete the same rows (20 hot stock rows every
// other transaction takes from, UPDATE … RETURNING; deletes of the oldest
// customers and orders), writing the change files by the prepared
// protocol, shipped and received as ferry ship and ferry receive run them.
// The initial rows are only in the database: receivers get them from the
// load alone. At the end the receiver's rows equal the database's, row by
// row, and so do those of a receiver started after the load. Variants:
// stock's rev as row version and no version column at all; the loader
// killed (kill -9 of a process) in the middle of the load and run again;
// the receiver's process killed and restarted every 400 ms during the load;
// a nats-server process killed and restarted during the load (kill -9 after
// acknowledging messages it had not written out loses them, and the next
// messages take their sequence numbers: the running receiver reads the
// stream again on the gap this leaves, Applier.SetRescanOnGap).
func TestLoadWhileWriting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c := startTestCluster(t, ctx)
	admin := connect(t, ctx, c.URL("postgres"))
	for i, tc := range []struct {
		name     string
		versions bool
		kill     string // "loader", "receiver", "nats" or ""
	}{
		{"versions", true, ""},
		{"no-version-column", false, ""},
		{"loader-kill9", true, "loader"},
		{"receiver-kill9", true, "receiver"},
		{"nats-server-kill9", false, "nats"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := fmt.Sprintf("load_%d", i)
			if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
				t.Fatal(err)
			}
			url := c.URL(db)
			n := loadSize()
			wl := workload.Config{Seed: uint64(31 + i), Streams: 8, Customers: n, Products: n, Orders: n, HotRows: 20, HotPct: 50}.WithDefaults()
			if err := loadInitial(ctx, url, wl); err != nil {
				t.Fatal(err)
			}
			conn := connect(t, ctx, url)
			br, natsURL := listeningBroker(t)
			var natsProc *faults.NATSServer
			if tc.kill == "nats" {
				natsProc = natsServerProcess(t, ctx)
				br, natsURL = &broker{url: natsProc.URL()}, natsProc.URL()
			}
			m, err := newFilePipeline(br, wire.CodecZstd)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.close)
			w, err := format.OpenWriter(m.dir, fileSource, format.WithSync(format.SyncInterval, 20*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			m.sources = []string{fileSource}
			if err := m.start(ctx); err != nil {
				t.Fatal(err)
			}
			var recvChild *faults.Process
			if tc.kill == "receiver" {
				recvChild = receiverProcess(t, natsURL, m.recvDir)
			} else if err := m.startReceiver(ctx); err != nil {
				t.Fatal(err)
			}
			l, err := openLegacy(ctx, url, wl, []changeSink{w}, WriterProtocol{Order: OrderPrepared, Versions: tc.versions}, false)
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()

			// The legacy writes until the load is over, and a bit more.
			lctx, stopLegacy := context.WithCancel(ctx)
			var legacyErr error
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				legacyErr = l.run(lctx, time.Hour, wl.Streams, 0, nil)
			}()
			time.Sleep(300 * time.Millisecond)
			chunkRows := n / 8
			start := time.Now()
			if tc.kill == "loader" {
				killLoaderMidway(t, loadChild{URL: url, NATS: natsURL, Versions: tc.versions, ChunkRows: chunkRows})
			}
			nc, err := br.connect("loader")
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// The receiver's or the server's process is killed (kill -9)
			// and restarted while the load runs.
			killed := make(chan int)
			killEvery, maxKills := 400*time.Millisecond, 10
			// The server is killed as the load goes (after its 2nd, 6th
			// and 10th chunk), not by the clock: a fast machine would
			// finish the load before the first kill. Killed without end
			// it would never let the load through.
			natsKill := make(chan struct{}, 1)
			if natsProc != nil {
				maxKills = 3
			}
			next := func(kctx context.Context) bool {
				if natsProc == nil {
					return sleepCtx(kctx, killEvery)
				}
				select {
				case <-natsKill:
					return true
				case <-kctx.Done():
					return false
				}
			}
			kctx, stopKilling := context.WithCancel(ctx)
			go func() {
				n := 0
				defer func() { killed <- n }()
				var p *faults.Process
				switch {
				case recvChild != nil:
					p = recvChild
				case natsProc != nil:
					p = natsProc.Process
				default:
					return
				}
				for n < maxKills && next(kctx) {
					if err := p.Kill(); err != nil {
						t.Error(err)
						return
					}
					n++
					if natsProc != nil {
						err = natsProc.Start(ctx)
					} else {
						err = p.Start()
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
			lcfg := load.Config{ChunkRows: chunkRows, RetryWait: 200 * time.Millisecond}
			if tc.kill == "receiver" || tc.kill == "nats" {
				lcfg.ChunkRows = chunkRows / 4 // more chunks: a longer load
			}
			if natsProc != nil {
				var chunks atomic.Int64
				lcfg.Progress = func(p load.Progress) {
					if p.Done {
						return
					}
					switch chunks.Add(1) {
					case 2, 6, 10:
						select {
						case natsKill <- struct{}{}:
						default:
						}
					}
				}
			}
			err = loadTables(ctx, nc, url, tc.versions, lcfg)
			stopKilling()
			kills := <-killed
			if kills > 0 {
				t.Logf("%s process killed (kill -9) and restarted %d times during the load", tc.kill, kills)
			}
			if natsProc != nil && kills == 0 {
				t.Fatal("the nats-server was never killed: the load sent fewer than 2 chunks")
			}
			if err != nil {
				t.Fatal(err)
			}
			loadTime := time.Since(start)
			if recvChild != nil {
				// The last run of the receiver's process ends by kill -9
				// too; an in-process receiver continues from its store.
				if err := recvChild.Kill(); err != nil {
					t.Fatal(err)
				}
				if err := m.startReceiver(ctx); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(300 * time.Millisecond)
			stopLegacy()
			wg.Wait()
			if legacyErr != nil {
				t.Fatal(legacyErr)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := m.settle(ctx, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
			waitLoadsDone(t, ctx, m.rcv, len(workload.Tables()))
			sc, err := compareState(ctx, conn, m.rcv.Store())
			if err != nil {
				t.Fatal(err)
			}
			var dropped, applied uint64
			for _, ls := range m.rcv.Status().Loads {
				dropped += ls.RowsDropped
				applied += ls.RowsApplied
			}
			t.Logf("%d legacy transactions (%d changes) while loading %d rows in %s; receiver: %d load rows applied, %d dropped (newer live change), %d stream rescans; %d of %d rows differ %v",
				l.txs.Load(), l.changes.Load(), 6*n, loadTime.Round(time.Millisecond), applied, dropped, rescans(t, m.rcv), sc.Differ, sc.Rows, sc.Examples)
			if sc.Differ != 0 || sc.Rows < int64(4*n) {
				t.Fatalf("receiver against the database: %d of %d rows differ: %v", sc.Differ, sc.Rows, sc.Examples)
			}
			if dropped == 0 {
				t.Errorf("no load row was dropped: the load did not meet the live changes")
			}

			// A receiver that starts after the load: from the stream alone.
			m.stopReceiver()
			m.recvDir += "-late"
			if err := m.startReceiver(ctx); err != nil {
				t.Fatal(err)
			}
			if err := m.settle(ctx, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
			waitLoadsDone(t, ctx, m.rcv, len(workload.Tables()))
			if sc, err = compareState(ctx, conn, m.rcv.Store()); err != nil {
				t.Fatal(err)
			}
			if sc.Differ != 0 || sc.Rows < int64(4*n) {
				t.Fatalf("late receiver against the database: %d of %d rows differ: %v", sc.Differ, sc.Rows, sc.Examples)
			}
		})
	}
}

// killLoaderMidway runs the loader as a process and kills it (SIGKILL)
// after its first chunks.
func killLoaderMidway(t *testing.T, c loadChild) {
	t.Helper()
	cfg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), loadChildEnv+"="+string(cfg))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	chunks := 0
	for sc.Scan() && chunks < 11 { // into the second table
		if strings.HasPrefix(sc.Text(), "CHUNK") {
			chunks++
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if chunks < 11 {
		t.Fatalf("the loader process ended after %d chunks: %s", chunks, stderr.String())
	}
	t.Logf("loader killed (kill -9) after %d chunks", chunks)
}

// waitLoadsDone waits until the receiver reports n loads done.
func waitLoadsDone(t testing.TB, ctx context.Context, rcv *receiver.Receiver, n int) {
	t.Helper()
	err := waitFor(ctx, 3*time.Minute, "the receiver to apply every load", func() (bool, error) {
		done := 0
		for _, ls := range rcv.Status().Loads {
			switch ls.State {
			case "done":
				done++
			case "failed":
				return false, fmt.Errorf("load of %s failed: %s", ls.Table, ls.Error)
			}
		}
		return done == n, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// recvChildEnv, when set, makes the test binary a receiver process: its
// value is a recvChild as JSON.
const recvChildEnv = "FERRY_BENCH_RECV_CHILD"

type recvChild struct{ NATS, Dir string }

func recvChildMain(cfgJSON string) int {
	var c recvChild
	if err := json.Unmarshal([]byte(cfgJSON), &c); err != nil {
		return 2
	}
	nc, err := nats.Connect(c.NATS, nats.MaxReconnects(-1), nats.ReconnectBufSize(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver child:", err)
		return 1
	}
	rcv, err := receiver.New(receiver.WithNATS(nc), receiver.WithDataDir(c.Dir), receiver.WithStream(fileStream))
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver child:", err)
		return 1
	}
	if err := rcv.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "receiver child:", err)
		return 1
	}
	return 0
}

// receiverProcess starts a receiver as a process of its own (this test
// binary), supervised: restarted if it exits by itself.
func receiverProcess(t *testing.T, natsURL, dir string) *faults.Process {
	t.Helper()
	cfg, err := json.Marshal(recvChild{NATS: natsURL, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p := &faults.Process{Name: "receiver", Bin: os.Args[0], Args: []string{"-test.run=^$"}, Log: filepath.Join(t.TempDir(), "receiver.log"),
		Env: []string{recvChildEnv + "=" + string(cfg)}, Restart: 100 * time.Millisecond}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

// natsServerProcess builds nats-server (the module's pinned version) and
// starts it as a process.
func natsServerProcess(t *testing.T, ctx context.Context) *faults.NATSServer {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "nats-server")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	servers, err := faults.NewNATS(bin, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := servers[0]
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill() })
	return s
}

// rescans returns how many times r read its stream again from the start.
func rescans(t *testing.T, r *receiver.Receiver) int {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ferry_receiver_stream_rescans_total" && len(mf.GetMetric()) == 1 {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return 0
}
