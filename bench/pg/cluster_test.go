package pg_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/jackc/pgx/v5"
)

// startCluster starts a throwaway cluster, skipping only when PostgreSQL is
// not installed outside CI: under CI=true a missing install fails the test.
func startCluster(t *testing.T) *pg.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pg.StartCluster(ctx, pg.ClusterConfig{SharedBuffers: "32MB"})
	if errors.Is(err, pg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (run `make deps`): %v", err)
	}
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func TestClusterCounters(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if got, want := walLevel, "logical"; got != want {
		t.Fatalf("wal_level=%q, want %q", got, want)
	}
	if !pg.HasWal2JSON(c.BinDir()) {
		// Only ferry bench's cdc-log mode needs it; CI installs it.
		if os.Getenv("CI") == "true" {
			t.Errorf("wal2json not installed next to %s (make deps installs it)", c.BinDir())
		} else {
			t.Logf("wal2json not installed next to %s: ferry bench's cdc-log mode needs it (apt-get install postgresql-15-wal2json, or make deps)", c.BinDir())
		}
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id bigint primary key, v text)"); err != nil {
		t.Fatal(err)
	}
	before, err := pg.ReadCounters(ctx, conn, "public")
	if err != nil {
		t.Fatal(err)
	}
	cpuBefore, err := pg.ServerCPU(c.Pid())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"); err != nil {
		t.Fatal(err)
	}
	// The checkpointer reports the buffers it wrote after it wakes the
	// CHECKPOINT command up: wait for its report, however slow the host.
	if err := pg.Checkpoint(ctx, conn); err != nil {
		t.Fatal(err)
	}
	after, err := pg.ReadCounters(ctx, conn, "public")
	if err != nil {
		t.Fatal(err)
	}
	cpuAfter, err := pg.ServerCPU(c.Pid())
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	// 20,000 rows of ~230 bytes: at least 4 MB of heap and as much WAL.
	if d.WALLSN < 4<<20 {
		t.Errorf("WAL grew by %d bytes, want >= 4 MiB", d.WALLSN)
	}
	if d.RelationBytes < 4<<20 || d.Relations["public.t"] != d.RelationBytes {
		t.Errorf("relations grew by %d (%v), want >= 4 MiB, all in public.t", d.RelationBytes, d.Relations)
	}
	if d.BuffersWritten*d.BlockSize < 4<<20 {
		t.Errorf("buffers written after CHECKPOINT: %d x %d bytes, want >= 4 MiB", d.BuffersWritten, d.BlockSize)
	}
	if cpuAfter <= cpuBefore {
		t.Errorf("server CPU did not grow: %v then %v", cpuBefore, cpuAfter)
	}
}

func TestParseLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0/16B3748", 0x16B3748, true},
		{"1/0", 1 << 32, true},
		{"16B3748", 0, false},
		{"x/1", 0, false},
	} {
		got, err := pg.ParseLSN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLSN(%q) = %#x, %v; want %#x, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
