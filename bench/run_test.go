package bench_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench"
	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/workload"
)

// TestRunExternalPG runs the library against a server it did not start
// (--pg), with two modes and short phases and a small initial load: the
// modes must run, ship every change and report figures, the initial load's
// receivers must hold its rows, and the run must leave no database behind.
func TestRunExternalPG(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "64MB"})
	if errors.Is(err, pg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (run `make deps`): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	var progress bytes.Buffer
	res, err := bench.Run(ctx, bench.Config{
		Profile: "test", PGURL: c.URL("postgres"), PGBinDir: c.BinDir(),
		Modes:         []bench.Mode{bench.ModeNone, bench.ModeCDCTable},
		Workload:      workload.Config{Streams: 2, Customers: 200, Products: 200, Orders: 200},
		PhaseDuration: 900 * time.Millisecond, Rounds: 3, LatencyRate: 2000,
		LoadRows: 5000, // no LoaderCommand: the loader process is not run
		Progress: &progress,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	if len(res.Modes) != 2 {
		t.Fatalf("%d modes", len(res.Modes))
	}
	none, table := res.Modes[0], res.Modes[1]
	for _, m := range res.Modes {
		if m.Error != "" {
			t.Fatalf("mode %s: %s", m.Mode, m.Error)
		}
		if got := len(m.Load.SliceTxPerSec); got != 3 {
			t.Errorf("mode %s: %d load rounds, want 3", m.Mode, got)
		}
	}
	if !res.Settings.ExternalPG || res.Machine.Postgres == "" {
		t.Errorf("settings %+v machine %+v", res.Settings, res.Machine)
	}
	// The companion tables cost WAL: more per change than the baseline.
	if table.WALPerChange <= none.WALPerChange {
		t.Errorf("cdc-table WAL per change %.0f <= none's %.0f", table.WALPerChange, none.WALPerChange)
	}
	if table.LatencyJS == nil || table.LatencyJS.Samples == 0 {
		t.Errorf("cdc-table latency %+v", table.LatencyJS)
	}
	if l := res.InitialLoad; l == nil || l.Error != "" || l.Process != nil || l.EndToEnd.Rows != 5000 || l.StateCheck == nil || l.StateCheck.Rows != 2*5000 || l.StateCheck.Differ != 0 {
		t.Errorf("initial load %+v", l)
	}
	if !strings.Contains(progress.String(), "drain phase") {
		t.Errorf("no progress:\n%s", progress.String())
	}
	var dbs string
	conn := mustConnect(t, ctx, c.URL("postgres"))
	if err := conn.QueryRow(ctx, "SELECT coalesce(string_agg(datname, ','), '') FROM pg_database WHERE datname LIKE 'ferry_bench%'").Scan(&dbs); err != nil {
		t.Fatal(err)
	}
	if dbs != "" {
		t.Errorf("databases left behind: %s", dbs)
	}
}
