package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
	"github.com/nats-io/nats.go"
)

// loadPhaseChildEnv, when set, makes the test binary the initial-load
// phase's loader process, standing in for `ferry load` (a library test has
// no ferry binary): it takes the flags the phase passes.
const loadPhaseChildEnv = "FERRY_BENCH_LOAD_PHASE_CHILD"

func loadPhaseChildMain(args []string) int {
	fs := flag.NewFlagSet("load phase child", flag.ContinueOnError)
	pgURL, natsURL := fs.String("pg", "", ""), fs.String("nats", "", "")
	table, codec := fs.String("table", "", ""), fs.String("codec", "zstd", "")
	fs.String("progress", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := wire.ParseCodec(*codec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load phase child:", err)
		return 2
	}
	ctx := context.Background()
	nc, err := nats.Connect(*natsURL, nats.ReconnectBufSize(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "load phase child:", err)
		return 1
	}
	defer nc.Close()
	st, err := load.OpenJetStream(ctx, nc, jsclient.Config{Stream: fileStream}, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load phase child:", err)
		return 1
	}
	if _, err := load.Run(ctx, st, load.Input{PG: *pgURL}, load.Table{Name: *table}, load.Config{}.WithCodec(c)); err != nil {
		fmt.Fprintln(os.Stderr, "load phase child:", err)
		return 1
	}
	return 0
}

// TestInitialLoadPhase runs the initial-load phase on a small table with a
// real PostgreSQL and a loader process (this test binary): every step must
// report its figures, the receivers must hold the table's rows, compared
// row by row, and the phase must leave no database behind. It asserts no
// speed: the figures only have to be there.
func TestInitialLoadPhase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startTestCluster(t, ctx)
	t.Setenv(loadPhaseChildEnv, "1") // inherited by the loader process
	const n = 20_000
	cfg := Config{LoadRows: n, LoaderCommand: []string{os.Args[0]}}.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	srv := &pgServer{cluster: c, admin: c.URL("postgres"), urlFor: c.URL, pid: c.Pid()}
	admin := connect(t, ctx, srv.admin)
	var progress bytes.Buffer
	r := runLoadPhase(ctx, cfg, srv, admin, func(f string, a ...any) { fmt.Fprintf(&progress, f+"\n", a...) })
	t.Logf("progress:\n%s", progress.String())
	if r.Error != "" {
		t.Fatalf("initial load: %s", r.Error)
	}
	if sc := r.StateCheck; sc == nil || sc.Checks != 2 || sc.Rows != 2*n || sc.Differ != 0 {
		t.Fatalf("state check %+v, want 2 checks of %d rows, none differing", sc, n)
	}
	if r.Process == nil {
		t.Fatal("no loader process step")
	}
	for _, s := range []struct {
		name string
		step LoadStep
	}{{"stream", r.Stream}, {"ingest", r.Ingest}, {"end to end", r.EndToEnd}, {"process", *r.Process}} {
		if s.step.Rows != n || s.step.Seconds <= 0 || s.step.RowsPerSec <= 0 || s.step.RawMBPerSec <= 0 || s.step.ProcCPU <= 0 {
			t.Errorf("%s: %+v, want %d rows and positive figures", s.name, s.step, n)
		}
	}
	// The loader process's peak RSS: a Go process holding a NATS and a
	// PostgreSQL connection is at least a few MiB.
	if r.LoaderPeakRSS < 4<<20 {
		t.Errorf("loader peak RSS %d bytes", r.LoaderPeakRSS)
	}
	// The rows are the ~200-byte rows the phase promises, and zstd
	// shrinks them (their payload is hex).
	if r.RowBytes < 150 || r.RowBytes > 250 {
		t.Errorf("%.0f raw bytes per row, want about 200", r.RowBytes)
	}
	if r.Messages < 3 || r.Compression <= 1 || r.TableBytes <= 0 {
		t.Errorf("%d messages, compression %.2f, table %d bytes", r.Messages, r.Compression, r.TableBytes)
	}
	var dbs int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", loadDB).Scan(&dbs); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 {
		t.Errorf("database %s left behind", loadDB)
	}
}
