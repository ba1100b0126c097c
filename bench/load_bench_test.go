package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

func startBenchCluster(b *testing.B, ctx context.Context) *pg.Cluster {
	b.Helper()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "256MB"})
	if err != nil {
		b.Skipf("PostgreSQL: %v", err)
	}
	b.Cleanup(func() { c.Stop() })
	return c
}

// benchRows is the size of the benchmark's table: FERRY_LOAD_ROWS, default
// 200,000.
func benchRows() int {
	if n, err := strconv.Atoi(os.Getenv("FERRY_LOAD_ROWS")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// loadBenchTable creates loadTable (bench_rows) with n rows, as the
// initial-load phase of `ferry bench` does.
func loadBenchTable(b *testing.B, ctx context.Context, url string, n int) {
	b.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := createLoadTable(ctx, conn, n); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoad measures the initial load of a table of ~200-byte rows
// from PostgreSQL: "stream" into JetStream only (the loader's rate),
// "receiver" end to end until a receiver has applied every row, and
// "process" as a separate loader process, reporting its peak RSS. All on
// one host: PostgreSQL, the embedded JetStream server, the loader and the
// receiver share the machine's cores.
//
//	go test ./bench -run '^$' -bench BenchmarkLoad -benchtime 3x
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	c := startBenchCluster(b, ctx)
	url := c.URL("postgres")
	n := benchRows()
	loadBenchTable(b, ctx, url, n)
	cfg := func() load.Config { return load.Config{Reload: true} }

	// The floor: PostgreSQL's own rate, reading the rows as the loader's
	// chunks do (key order, text format) and doing nothing with them.
	b.Run("pg-read", func(b *testing.B) {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		start := time.Now()
		for i := 0; i < b.N; i++ {
			rows := 0
			for lo := int64(0); ; {
				res := conn.PgConn().ExecParams(ctx, "SELECT * FROM bench_rows WHERE id > $1::bigint ORDER BY id LIMIT 50000",
					[][]byte{[]byte(strconv.FormatInt(lo, 10))}, nil, nil, nil)
				got := 0
				for res.NextRow() {
					lo, _ = strconv.ParseInt(string(res.Values()[0]), 10, 64)
					got++
				}
				if _, err := res.Close(); err != nil {
					b.Fatal(err)
				}
				rows += got
				if got < 50000 {
					break
				}
			}
			if rows != n {
				b.Fatalf("%d rows", rows)
			}
		}
		b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "rows/s")
	})

	for _, codec := range []wire.Codec{wire.CodecZstd, wire.CodecS2} {
		b.Run("stream-"+codec.String(), func(b *testing.B) { benchStream(b, ctx, url, n, cfg().WithCodec(codec)) })
	}
	// receiver (zstd, the loader's default) and receiver-s2: end to end.
	for _, codec := range []wire.Codec{wire.CodecZstd, wire.CodecS2} {
		name := "receiver"
		if codec != wire.CodecZstd {
			name += "-" + codec.String()
		}
		b.Run(name, func(b *testing.B) { benchReceiver(b, ctx, url, n, cfg().WithCodec(codec)) })
	}

	b.Run("process", func(b *testing.B) {
		br, natsURL := listeningBroker(b)
		_ = br
		var maxRSS int64
		start := time.Now()
		for i := 0; i < b.N; i++ {
			cfgJSON, _ := json.Marshal(loadBenchChild{URL: url, NATS: natsURL})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), loadBenchChildEnv+"="+string(cfgJSON))
			out, err := cmd.CombinedOutput()
			if os.Getenv("FERRY_LOAD_DEBUG") != "" {
				b.Logf("loader process output: %s", out)
			}
			if err != nil {
				b.Fatalf("loader process: %v: %s", err, out)
			}
			// The child's own peak (VmHWM): wait4's ru_maxrss of a child
			// started with vfork counts the parent's pages.
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					maxRSS = max(maxRSS, kb)
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "rows/s")
		b.ReportMetric(float64(maxRSS)/1024, "loader-MiB-RSS")
	})
}

// loadBenchChildEnv makes the test binary a loader process of the
// benchmark: it loads bench_rows once.
const loadBenchChildEnv = "FERRY_BENCH_LOAD_BENCH_CHILD"

type loadBenchChild struct{ URL, NATS string }

func loadBenchChildMain(cfgJSON string) int {
	var c loadBenchChild
	if err := json.Unmarshal([]byte(cfgJSON), &c); err != nil {
		return 2
	}
	ctx := context.Background()
	nc, err := nats.Connect(c.NATS, nats.ReconnectBufSize(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := load.Run(ctx, st, load.Input{PG: c.URL}, load.Table{Name: loadTable.Name}, load.Config{Reload: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Println(line)
		}
	}
	return 0
}

func benchStream(b *testing.B, ctx context.Context, url string, n int, cfg load.Config) {
	br, _ := listeningBroker(b)
	nc, err := br.connect("loader")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := load.Run(ctx, st, load.Input{PG: url}, load.Table{Name: loadTable.Name}, cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "rows/s")
}

// benchReceiver measures the load end to end: PostgreSQL to a running
// receiver holding every row.
func benchReceiver(b *testing.B, ctx context.Context, url string, n int, cfg load.Config) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		br, _ := listeningBroker(b)
		m, err := newFilePipeline(br, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.startReceiver(ctx); err != nil {
			b.Fatal(err)
		}
		nc, err := br.connect("loader")
		if err != nil {
			b.Fatal(err)
		}
		st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := load.Run(ctx, st, load.Input{PG: url}, load.Table{Name: loadTable.Name}, cfg); err != nil {
			b.Fatal(err)
		}
		waitLoadsDone(b, ctx, m.rcv, 1)
		total += time.Since(start)
		b.StopTimer()
		var applied uint64
		for _, ls := range m.rcv.Status().Loads {
			applied += ls.RowsApplied
		}
		if applied != uint64(n) {
			b.Fatalf("receiver applied %d rows, want %d", applied, n)
		}
		nc.Close()
		m.close()
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "rows/s")
}
