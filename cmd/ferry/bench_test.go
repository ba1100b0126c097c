//go:build !lean

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench"
	"github.com/ferrysync/ferry/bench/pg"
)

// requirePostgres skips when PostgreSQL (with wal2json) is not installed,
// except under CI=true, where the install is part of the job (make deps)
// and its absence must fail.
func requirePostgres(t *testing.T) {
	t.Helper()
	dir, err := pg.FindBinDir()
	if err == nil && !pg.HasWal2JSON(dir) {
		err = os.ErrNotExist
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL with wal2json is required under CI (make deps installs it): %v", err)
		}
		t.Skipf("PostgreSQL with wal2json not installed (run `make deps`): %v", err)
	}
}

// TestBenchQuick runs `ferry bench --quick` end to end, every mode, as CI's
// smoke run: it must print the table and write a report whose figures are
// all there.
func TestBenchQuick(t *testing.T) {
	requirePostgres(t)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The initial-load phase runs ferry load as a process: this test
	// binary is not ferry.
	if err := run(ctx, env, []string{"bench", "--quick", "--out", out, "--loader-bin", buildFerry(t)}); err != nil {
		t.Fatalf("ferry bench --quick: %v\nstderr:\n%s", err, stderr.String())
	}
	table := stdout.String()
	for _, want := range []string{"| mode |", "| none |", "| cdc-table |", "| cdc-log |", "| file |", "Shipping:", "goal: ", "Initial load (bench_rows: 100,000 rows"} {
		if !strings.Contains(table, want) {
			t.Errorf("output lacks %q:\n%s", want, table)
		}
	}
	if !strings.Contains(stderr.String(), "load phase") {
		t.Errorf("no progress on stderr:\n%s", stderr.String())
	}
	data, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Results
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if got, want := len(res.Modes), 4; got != want {
		t.Fatalf("%d modes in results.json, want %d", got, want)
	}
	if res.Machine.Cores == 0 || res.Machine.Postgres == "" || res.Machine.Go == "" {
		t.Errorf("machine not described: %+v", res.Machine)
	}
	for _, m := range res.Modes {
		if m.Error != "" {
			t.Errorf("mode %s failed: %s", m.Mode, m.Error)
			continue
		}
		if m.Load.Changes == 0 || m.Load.TxPerSec <= 0 || m.Load.WALBytes <= 0 || m.BytesPerChange <= 0 {
			t.Errorf("mode %s: empty load phase %+v", m.Mode, m.Load)
		}
		if m.Mode == "none" {
			continue
		}
		if m.Drain == nil || m.ShipChangesPerSec <= 0 || m.Drain.Changes != m.Load.Changes+m.InitialChanges {
			t.Errorf("mode %s: drain %+v does not ship the load phase's %d changes (and the %d initial rows)", m.Mode, m.Drain, m.Load.Changes, m.InitialChanges)
		}
		if m.ConcurrentBaseline == nil || m.ConcurrentBaseline.Txs == 0 {
			t.Errorf("mode %s: no none baseline beside its concurrent phase", m.Mode)
		}
		if m.Concurrent == nil || m.Paced == nil || m.LatencyJS == nil || m.LatencyJS.Samples == 0 {
			t.Errorf("mode %s: shipping phases missing (concurrent %v, paced %v, latency %+v)", m.Mode, m.Concurrent != nil, m.Paced != nil, m.LatencyJS)
		}
		if m.WireMessages == 0 || m.WireBytes == 0 {
			t.Errorf("mode %s: nothing counted on the wire", m.Mode)
		}
		if m.Concurrent != nil && m.Paced != nil && m.Mode != "file" {
			// One message per change, none lost, none doubled.
			if got, want := m.WireMessages, m.Load.Changes+m.Concurrent.Changes+m.Paced.Changes; got != want {
				t.Errorf("mode %s: %d messages in the stream, want one per change: %d", m.Mode, got, want)
			}
		}
		if m.Mode == "file" {
			if m.FilePerChange <= 0 || m.Apply == nil || m.LatencyReceiver == nil || m.LatencyReceiver.Samples == 0 || m.Compression <= 1 {
				t.Errorf("file mode: files %.1f B/change, apply %+v, receiver latency %+v, compression %.2f", m.FilePerChange, m.Apply, m.LatencyReceiver, m.Compression)
			}
		}
	}
	if l := res.InitialLoad; l == nil || l.Error != "" || l.Process == nil || l.LoaderPeakRSS <= 0 || l.EndToEnd.RowsPerSec <= 0 ||
		l.StateCheck == nil || l.StateCheck.Differ != 0 || l.StateCheck.Rows != 2*l.Rows {
		t.Errorf("initial load: %+v", l)
	}
	for _, f := range []string{"report.md", "throughput.svg", "latency.svg"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || len(b) < 200 {
			t.Errorf("%s: %d bytes, %v", f, len(b), err)
		}
	}
}

func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--modes", "none,bogus"}, "unknown mode"},
		{[]string{"bench", "--mix", "1/2"}, "--mix"},
		{[]string{"bench", "--durability", "maybe"}, "durability"},
		{[]string{"bench", "extra"}, "unexpected arguments"},
		{[]string{"bench", "--load-rows", "-5"}, "load-rows"},
	} {
		var stdout, stderr bytes.Buffer
		env := &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
		err := run(context.Background(), env, tc.args)
		// A flag's own error is on stderr, with the usage.
		if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}
