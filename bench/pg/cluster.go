// Package pg runs the PostgreSQL cluster that stands in for the legacy
// database in Ferry's bench suite: a throwaway cluster created with initdb in
// a temporary directory, listening on a free loopback port, with
// wal_level=logical and the same durability settings for every mode; or an
// existing server given by URL. It also reads PostgreSQL's own counters (WAL
// position, relation sizes, buffers written, CPU time of the server
// processes) that the bench turns into per-change figures.
//
// PostgreSQL refuses to run as root, so when the bench runs as root (CI does)
// the cluster runs as the "postgres" system user that the Debian package
// creates, in a directory that user owns.
package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled means the PostgreSQL server binaries (or wal2json) were
// not found.
var ErrNotInstalled = errors.New("pg: PostgreSQL not installed")

// Durability settings shared by every mode of a run.
type Durability string

const (
	// Sync is PostgreSQL's default: synchronous_commit=on, a commit returns
	// once its WAL is fsynced.
	Sync Durability = "sync"
	// Async is synchronous_commit=off: commits return before the fsync, the
	// WAL writer fsyncs every wal_writer_delay (100 ms).
	Async Durability = "async"
)

// ParseDurability parses "sync" or "async".
func ParseDurability(s string) (Durability, error) {
	switch Durability(s) {
	case Sync, Async:
		return Durability(s), nil
	}
	return "", fmt.Errorf("pg: unknown durability %q (want sync or async)", s)
}

// ClusterConfig configures a throwaway cluster.
type ClusterConfig struct {
	// BinDir holds initdb and postgres; empty means FindBinDir.
	BinDir string
	// Durability of commits; empty means Sync.
	Durability Durability
	// SharedBuffers, e.g. "256MB"; empty means 256MB.
	SharedBuffers string
	// Log receives the server's output; nil discards it (it is kept in
	// the data directory's server.log while the cluster runs).
	Log func(line string)
}

// Cluster is a running throwaway PostgreSQL cluster. Stop it.
type Cluster struct {
	dir     string // owned temp dir (removed by Stop)
	dataDir string
	port    int
	binDir  string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	version string
}

// FindBinDir returns the directory holding PostgreSQL's server binaries:
// $FERRY_PG_BIN if set, else the directory of initdb on PATH, else the
// highest version under /usr/lib/postgresql/*/bin (Debian's layout) or
// /usr/pgsql-*/bin (RPM's).
func FindBinDir() (string, error) {
	if d := os.Getenv("FERRY_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("%w: FERRY_PG_BIN=%s has no initdb: %v", ErrNotInstalled, d, err)
		}
		return d, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// Debian links a few binaries into PATH; the others (postgres,
		// pg_recvlogical) and the plugins sit next to the real one.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	var cands []string
	for _, pat := range []string{"/usr/lib/postgresql/*/bin/initdb", "/usr/pgsql-*/bin/initdb", "/usr/local/pgsql/bin/initdb"} {
		m, _ := filepath.Glob(pat)
		cands = append(cands, m...)
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("%w: no initdb on PATH nor under /usr/lib/postgresql/*/bin; install it (Debian: apt-get install postgresql postgresql-15-wal2json, or `make deps`) or set FERRY_PG_BIN", ErrNotInstalled)
	}
	sort.Slice(cands, func(i, j int) bool { return versionOf(cands[i]) > versionOf(cands[j]) })
	return filepath.Dir(cands[0]), nil
}

// versionOf extracts the major version from a path like /usr/lib/postgresql/15/bin/initdb.
func versionOf(p string) int {
	for _, part := range strings.Split(p, string(filepath.Separator)) {
		part = strings.TrimPrefix(part, "pgsql-")
		if n, err := strconv.Atoi(part); err == nil {
			return n
		}
	}
	return 0
}

// StartCluster creates and starts a cluster. The caller must Stop it.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	bin := cfg.BinDir
	if bin == "" {
		var err error
		if bin, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%w: %s missing in %s", ErrNotInstalled, b, bin)
		}
	}
	dur := cfg.Durability
	if dur == "" {
		dur = Sync
	}
	if _, err := ParseDurability(string(dur)); err != nil {
		return nil, err
	}
	sb := cfg.SharedBuffers
	if sb == "" {
		sb = "256MB"
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ferry-bench-pg-")
	if err != nil {
		return nil, fmt.Errorf("pg: creating cluster directory: %w", err)
	}
	c := &Cluster{dir: dir, dataDir: filepath.Join(dir, "data"), binDir: bin, exited: make(chan struct{})}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("pg: handing %s to the postgres user: %w", dir, err))
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", c.dataDir, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pg: initdb in %s: %w: %s", c.dataDir, err, bytes.TrimSpace(out)))
	}
	if v, err := os.ReadFile(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		c.version = strings.TrimSpace(string(v))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	c.port = port
	syncCommit := "on"
	if dur == Async {
		syncCommit = "off"
	}
	settings := map[string]string{
		"listen_addresses":        "'127.0.0.1'",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": "''",
		"wal_level":               "logical",
		"max_wal_senders":         "10",
		"max_replication_slots":   "10",
		"fsync":                   "on",
		"full_page_writes":        "on",
		"synchronous_commit":      syncCommit,
		"wal_writer_delay":        "100ms",
		"shared_buffers":          sb,
		"max_wal_size":            "8GB",
		"checkpoint_timeout":      "1h",
		"max_connections":         "100",
		"track_io_timing":         "on",
		"logging_collector":       "off",
	}
	var conf strings.Builder
	conf.WriteString("\n# ferry bench\n")
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&conf, "%s = %s\n", k, settings[k])
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fail(fmt.Errorf("pg: opening postgresql.conf: %w", err))
	}
	_, werr := f.WriteString(conf.String())
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fail(fmt.Errorf("pg: writing postgresql.conf: %w", werr))
	}
	logPath := filepath.Join(c.dataDir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fail(fmt.Errorf("pg: creating %s: %w", logPath, err))
	}
	// The server is our child: we know its pid (for CPU accounting) and
	// stop it ourselves.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", c.dataDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fail(fmt.Errorf("pg: starting postgres: %w", err))
	}
	c.cmd = cmd
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	if err := c.waitReady(ctx, 60*time.Second); err != nil {
		c.Stop()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; server log:\n%s", err, tail(log, 2000))
	}
	return c, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// serverCredential returns the credential to run the server with: nil when
// not root, the postgres user's when root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pg: running as root, and PostgreSQL refuses to: no \"postgres\" user to run it as (%v); install the postgresql package or run as another user", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pg: postgres user has uid %q gid %q: not numeric", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pg: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("pg: postgres exited while starting: %v", c.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pg: server in %s not ready after %v: %v", c.dataDir, timeout, last)
}

// URL returns the connection URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Port returns the port the server listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// DataDir returns the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// BinDir returns the directory of the server binaries (pg_recvlogical too).
func (c *Cluster) BinDir() string { return c.binDir }

// Pid returns the postmaster's process id.
func (c *Cluster) Pid() int { return c.cmd.Process.Pid }

// Stop shuts the server down (fast shutdown, then kill after 30 s) and
// removes its directory.
func (c *Cluster) Stop() error {
	var err error
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-c.exited:
			case <-time.After(30 * time.Second):
				c.cmd.Process.Kill()
				<-c.exited
				err = fmt.Errorf("pg: server in %s did not stop within 30 s; killed", c.dataDir)
			}
		}
	}
	if rerr := os.RemoveAll(c.dir); rerr != nil && err == nil {
		err = fmt.Errorf("pg: removing %s: %w", c.dir, rerr)
	}
	return err
}
