package pg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Counters is a snapshot of PostgreSQL's own write counters. Differences of
// two snapshots say what a phase wrote.
type Counters struct {
	// WALLSN is pg_current_wal_lsn() as a byte position.
	WALLSN uint64
	// WALBytes, WALRecords and WALFPI are pg_stat_wal's wal_bytes,
	// wal_records and wal_fpi (full-page images). Backends flush these
	// statistics up to a second or more late: WALLSN is the exact figure.
	WALBytes, WALRecords, WALFPI int64
	// BuffersWritten is pg_stat_bgwriter's buffers_checkpoint +
	// buffers_clean + buffers_backend: data pages (tables, indexes) the
	// server wrote to its files.
	BuffersWritten int64
	// Checkpoints counts checkpoints (timed and requested).
	Checkpoints int64
	// BlockSize is the server's block_size.
	BlockSize int64
	// RelationBytes is pg_total_relation_size (heap, indexes, TOAST) summed
	// over the tables of the schemas asked for.
	RelationBytes int64
	// Relations holds each table's pg_total_relation_size.
	Relations map[string]int64
}

// ReadCounters reads the counters; schemas name whose tables to size.
func ReadCounters(ctx context.Context, conn *pgx.Conn, schemas ...string) (Counters, error) {
	var c Counters
	var lsn string
	err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, w.wal_bytes::bigint, w.wal_records, w.wal_fpi,
		b.buffers_checkpoint + b.buffers_clean + b.buffers_backend, b.checkpoints_timed + b.checkpoints_req,
		current_setting('block_size')::bigint
		FROM pg_stat_wal w, pg_stat_bgwriter b`).Scan(&lsn, &c.WALBytes, &c.WALRecords, &c.WALFPI, &c.BuffersWritten, &c.Checkpoints, &c.BlockSize)
	if err != nil {
		return c, fmt.Errorf("pg: reading pg_stat_wal and pg_stat_bgwriter: %w", err)
	}
	if c.WALLSN, err = ParseLSN(lsn); err != nil {
		return c, err
	}
	c.Relations = map[string]int64{}
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)`, schemas)
	if err != nil {
		return c, fmt.Errorf("pg: reading relation sizes: %w", err)
	}
	for rows.Next() {
		var name string
		var size int64
		if err := rows.Scan(&name, &size); err != nil {
			return c, fmt.Errorf("pg: reading relation sizes: %w", err)
		}
		c.Relations[name] = size
		c.RelationBytes += size
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("pg: reading relation sizes: %w", err)
	}
	return c, nil
}

// Checkpoint runs CHECKPOINT and waits until the checkpointer has reported
// its statistics (it reports them after waking the CHECKPOINT command up, so
// a read right after the command can miss the pages it wrote).
func Checkpoint(ctx context.Context, conn *pgx.Conn) error {
	var before int64
	if err := conn.QueryRow(ctx, "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").Scan(&before); err != nil {
		return fmt.Errorf("pg: reading pg_stat_bgwriter: %w", err)
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("pg: CHECKPOINT: %w", err)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").Scan(&n); err != nil {
			return fmt.Errorf("pg: reading pg_stat_bgwriter: %w", err)
		}
		if n > before {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("pg: the checkpointer did not report its CHECKPOINT within 60 s")
}

// Sub returns the counters' growth from before to c.
func (c Counters) Sub(before Counters) Counters {
	d := Counters{
		WALLSN:         c.WALLSN - before.WALLSN,
		WALBytes:       c.WALBytes - before.WALBytes,
		WALRecords:     c.WALRecords - before.WALRecords,
		WALFPI:         c.WALFPI - before.WALFPI,
		BuffersWritten: c.BuffersWritten - before.BuffersWritten,
		BlockSize:      c.BlockSize,
		RelationBytes:  c.RelationBytes - before.RelationBytes,
		Relations:      map[string]int64{},
	}
	for k, v := range c.Relations {
		d.Relations[k] = v - before.Relations[k]
	}
	return d
}

// ParseLSN parses a WAL position such as "0/16B3748".
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pg: malformed LSN %q", s)
	}
	return h<<32 | l, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ServerCPU returns the CPU time (user + system) that the server whose
// postmaster is pid has used: the postmaster's own time, the time of its
// exited children it reaped (cutime, cstime: backends, autovacuum workers,
// walsenders that ended) and the time of its live children. It reads /proc,
// so the server must run on this host.
func ServerCPU(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, fmt.Errorf("pg: reading CPU time of postmaster %d: %w", pid, err)
	}
	ticks := st.utime + st.stime + st.cutime + st.cstime
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("pg: listing /proc: %w", err)
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		cst, err := readStat(p)
		if err != nil || cst.ppid != pid {
			continue // gone, or not a server process
		}
		ticks += cst.utime + cst.stime
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// ProcessCPU returns the user + system CPU time of process pid.
func ProcessCPU(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return time.Duration(st.utime+st.stime) * time.Second / clockTicks, nil
}

// ParentPid returns the parent of process pid (the postmaster of a backend).
func ParentPid(pid int) (int, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return st.ppid, nil
}

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

func readStat(pid int) (procStat, error) {
	var st procStat
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return st, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return st, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime..cstime fields 14-17.
	if len(f) < 15 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseInt(f[11], 10, 64)
	st.stime, _ = strconv.ParseInt(f[12], 10, 64)
	st.cutime, _ = strconv.ParseInt(f[13], 10, 64)
	st.cstime, _ = strconv.ParseInt(f[14], 10, 64)
	return st, nil
}

// HasWal2JSON reports whether the wal2json output plugin is installed next
// to the server binaries in binDir.
func HasWal2JSON(binDir string) bool {
	_, err := os.Stat(filepath.Join(binDir, "..", "lib", "wal2json.so"))
	return err == nil
}

// Version returns the server's version string (server_version).
func Version(ctx context.Context, conn *pgx.Conn) (string, error) {
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "", fmt.Errorf("pg: reading server_version: %w", err)
	}
	return v, nil
}
