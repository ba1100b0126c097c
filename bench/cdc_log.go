package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The cdc-log mode captures changes as Debezium's PostgreSQL connector
// does: logical decoding of the WAL through a replication slot, here with
// the wal2json plugin streamed by pg_recvlogical over the replication
// protocol (tables keep the default replica identity, so updates and
// deletes carry the key as their before image). A relay turns each change
// into the same JSON message as the cdc-table mode and publishes it to
// JetStream, one message per change.

const slotName = "ferry_bench"

type cdcLog struct {
	binDir string
	port   int
	db     string
	nc     *nats.Conn

	shipped atomic.Int64
	cmd     *exec.Cmd
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errMu   sync.Mutex
	err     error
}

func (m *cdcLog) setup(ctx context.Context, conn *pgx.Conn) error {
	if !pg.HasWal2JSON(m.binDir) {
		return fmt.Errorf("bench: cdc-log needs the wal2json plugin, not found in %s; install postgresql-15-wal2json (make deps) or leave cdc-log out of --modes",
			filepath.Join(m.binDir, "..", "lib"))
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'wal2json')", slotName); err != nil {
		return fmt.Errorf("bench: creating the logical replication slot %s: %w", slotName, err)
	}
	return nil
}

func (m *cdcLog) fail(err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *cdcLog) failed() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

func (m *cdcLog) shippedChanges() int64 { return m.shipped.Load() }

// pid returns pg_recvlogical's process id (0 when not running).
func (m *cdcLog) pid() int {
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

func (m *cdcLog) start(ctx context.Context) error {
	js, err := jetstream.New(m.nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(m.binDir, "pg_recvlogical"),
		"-h", "127.0.0.1", "-p", strconv.Itoa(m.port), "-U", "postgres", "-d", m.db,
		"--slot", slotName, "--start", "-f", "-", "-s", "1",
		"-o", "format-version=2", "-o", "include-transaction=false", "-o", "include-types=false",
		"-o", "include-lsn=true")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &limitedBuffer{max: 4096}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: starting pg_recvlogical: %w", err)
	}
	m.cmd = cmd
	ctx, m.cancel = context.WithCancel(ctx)
	acks := make(chan jetstream.PubAckFuture, 65536)
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		defer close(acks)
		err := m.relay(ctx, js, out, acks)
		if err != nil && ctx.Err() == nil {
			m.fail(fmt.Errorf("%w (pg_recvlogical: %s)", err, stderr.String()))
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		defer m.wg.Done()
		for f := range acks {
			select {
			case <-f.Ok():
				m.shipped.Add(1)
			case err := <-f.Err():
				m.fail(fmt.Errorf("bench: cdc-log relay: publish not acknowledged: %w", err))
			case <-ctx.Done():
			}
		}
	}()
	return nil
}

// wal2jsonChange is one line of wal2json's format-version 2.
type wal2jsonChange struct {
	Action   string `json:"action"`
	LSN      string `json:"lsn"`
	Table    string `json:"table"`
	Columns  []wal2jsonColumn
	Identity []wal2jsonColumn
}

type wal2jsonColumn struct {
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value"`
}

func (m *cdcLog) relay(ctx context.Context, js jetstream.JetStream, out io.Reader, acks chan<- jetstream.PubAckFuture) error {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var ch wal2jsonChange
	for sc.Scan() {
		ch = wal2jsonChange{Columns: ch.Columns[:0], Identity: ch.Identity[:0]}
		if err := json.Unmarshal(sc.Bytes(), &ch); err != nil {
			return fmt.Errorf("bench: cdc-log relay: decoding wal2json output %.200q: %w", sc.Bytes(), err)
		}
		var op string
		switch ch.Action {
		case "I":
			op = "c"
		case "U":
			op = "u"
		case "D":
			op = "d"
		default:
			continue // B, C, M, T: not row changes
		}
		b := make([]byte, 0, 64+len(sc.Bytes())/2)
		b = append(b, `{"op":"`...)
		b = append(b, op...)
		b = append(b, `","table":"`...)
		b = append(b, ch.Table...)
		b = append(b, `","lsn":"`...)
		b = append(b, ch.LSN...)
		b = append(b, `","before":`...)
		b = appendColumns(b, ch.Identity)
		b = append(b, `,"after":`...)
		b = appendColumns(b, ch.Columns)
		b = append(b, '}')
		f, err := js.PublishAsync("cdc."+ch.Table, b)
		if err != nil {
			return fmt.Errorf("bench: cdc-log relay publishing: %w", err)
		}
		select {
		case acks <- f:
		case <-ctx.Done():
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("bench: cdc-log relay reading pg_recvlogical: %w", err)
	}
	if ctx.Err() == nil {
		return fmt.Errorf("bench: pg_recvlogical ended")
	}
	return nil
}

func appendColumns(b []byte, cols []wal2jsonColumn) []byte {
	if len(cols) == 0 {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, c := range cols {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, c.Name)
		b = append(b, ':')
		b = append(b, c.Value...)
	}
	return append(b, '}')
}

// stop stops pg_recvlogical and the relay, then drops the slot.
func (m *cdcLog) stop() {
	if m.cancel != nil {
		m.cancel() // first: the relay must not take the end of its input for a failure
	}
	if m.cmd != nil && m.cmd.ProcessState == nil {
		m.cmd.Process.Signal(interruptSignal)
		done := make(chan struct{})
		go func() { m.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			m.cmd.Process.Kill()
			<-done
		}
	}
	m.wg.Wait()
}

func (m *cdcLog) dropSlot(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slotName)
	return err
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
