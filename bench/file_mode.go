package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// The file mode is Ferry: the legacy application writes each transaction to
// its change files with format.Writer by a writer protocol (below), and the
// shipper and receiver libraries, embedded, carry the files through
// JetStream into a Pebble store.

const (
	fileStream = wire.DefaultStream
	fileSource = "legacy"
)

// Orders of the writer protocols: when a transaction's frame is appended.
const (
	// OrderPrepared appends the frame with Writer.Prepare inside the
	// database transaction, after its last statement and before COMMIT,
	// while it holds its row locks (so frames of transactions on the same
	// rows are in the database's commit order); the writer's fsync
	// overlaps the COMMIT; the outcome is recorded after it
	// (format SPEC, "Commit order").
	OrderPrepared = "prepared"
	// OrderAfterCommit commits the frame with Writer.Commit once the
	// database's COMMIT returned: the old way, whose frames of contended
	// rows can reach the files out of commit order, with its fsync after
	// the database's, in series.
	OrderAfterCommit = "after-commit"
)

// WriterProtocol is how the file mode's legacy writes its change files: an
// order, and whether changes carry row versions (the stock table's rev
// column as format.Change.Version). Written "prepared", "after-commit",
// "prepared+versions", "after-commit+versions".
type WriterProtocol struct {
	Order    string
	Versions bool
}

func (p WriterProtocol) String() string {
	if p.Versions {
		return p.Order + "+versions"
	}
	return p.Order
}

// DefaultWriterProtocols is the file mode's protocol unless configured.
const DefaultWriterProtocols = "prepared+versions"

// ParseWriterProtocols parses a comma-separated list of writer protocols.
func ParseWriterProtocols(s string) ([]WriterProtocol, error) {
	if s == "" {
		s = DefaultWriterProtocols
	}
	var out []WriterProtocol
	seen := map[WriterProtocol]bool{}
	for _, part := range strings.Split(s, ",") {
		order, versions := strings.CutSuffix(strings.TrimSpace(part), "+versions")
		p := WriterProtocol{Order: order, Versions: versions}
		if order != OrderPrepared && order != OrderAfterCommit {
			return nil, fmt.Errorf("bench: unknown writer protocol %q (want prepared or after-commit, optionally +versions)", part)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// fileModeName is the name of the file mode run with protocol p, the i-th
// of the configured ones: "file" for the first, "file-" + p for the others.
func fileModeName(i int, p WriterProtocol) string {
	if i == 0 {
		return string(ModeFile)
	}
	return string(ModeFile) + "-" + p.String()
}

// writerSync returns the change-file sync policy whose durability matches
// the database's: with synchronous_commit=on a commit is on disk when it
// returns, so the writer's Commit waits for its fsync too (SyncAlways,
// group commit); with synchronous_commit=off PostgreSQL's WAL writer
// fsyncs every wal_writer_delay (100 ms), and so does the writer
// (SyncInterval).
func writerSync(d pg.Durability) format.SyncPolicy {
	if d == pg.Async {
		return format.SyncInterval
	}
	return format.SyncAlways
}

// writerSync returns the writer's sync policy of c: WriterSync if set (it
// was validated), else the one matching c.Durability.
func (c Config) writerSync() format.SyncPolicy {
	if c.WriterSync != "" {
		if p, err := format.ParseSyncPolicy(c.WriterSync); err == nil {
			return p
		}
	}
	return writerSync(c.Durability)
}

type fileMode struct {
	wl           workload.Config
	proto        WriterProtocol
	initial      int64 // changes of the initial load in the files
	codec        wire.Codec
	dir, recvDir string
	// One writer (and shipper) per app server, source sources[i].
	sources []string
	ws      []*format.Writer
	shipNC  *nats.Conn
	recvNC  *nats.Conn
	// ship runs a shipper per source as ferry ship does (shipper.Group:
	// stream-creation retry included); shipDone closes when it returned.
	ship       *shipper.Group
	shipCancel context.CancelFunc
	shipDone   chan struct{}
	rcv        *receiver.Receiver

	runCtx context.Context // of the shipper and receiver; cancel stops them
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// The receiver runs in the apply and paced phases only: on a real
	// deployment it runs next to the microservice, not on the legacy host,
	// and the CDC modes have no consumer either.
	rcvCancel context.CancelFunc
	rcvDone   chan struct{}
	applied   int64 // changes applied by receivers that were stopped
	errMu     sync.Mutex
	err       error
}

func newFileMode(cfg Config, br *broker, dbURL string, proto WriterProtocol) (*fileMode, error) {
	codec, err := wire.ParseCodec(cfg.Codec)
	if err != nil {
		return nil, err
	}
	m, err := newFilePipeline(br, codec)
	if err != nil {
		return nil, err
	}
	m.wl, m.proto = cfg.Workload, proto
	m.sources = nil
	for i := 0; i < max(1, cfg.Sources); i++ {
		src := sourceName(i)
		w, err := format.OpenWriter(m.dir, src, format.WithSync(cfg.writerSync(), 100*time.Millisecond),
			format.WithResolver(pgResolver(dbURL, cfg.DrainTimeout)))
		if err != nil {
			m.close()
			return nil, fmt.Errorf("bench: opening the change-file writer of source %s: %w", src, err)
		}
		m.ws, m.sources = append(m.ws, w), append(m.sources, src)
	}
	return m, nil
}

// newFilePipeline returns a file mode without a writer: its directories
// (change files, receiver) and NATS connections.
func newFilePipeline(br *broker, codec wire.Codec) (*fileMode, error) {
	dir, err := os.MkdirTemp("", "ferry-bench-files-")
	if err != nil {
		return nil, fmt.Errorf("bench: creating the change-file directory: %w", err)
	}
	m := &fileMode{codec: codec, dir: filepath.Join(dir, "changes"), recvDir: filepath.Join(dir, "receiver"), sources: []string{fileSource}}
	m.runCtx, m.cancel = context.WithCancel(context.Background())
	if m.shipNC, err = br.connect("ferry-bench-shipper"); err != nil {
		m.close()
		return nil, err
	}
	if m.recvNC, err = br.connect("ferry-bench-receiver"); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// sourceName names the change-file source of app server i.
func sourceName(i int) string {
	if i == 0 {
		return fileSource
	}
	return fileSource + "-" + strconv.Itoa(i+1)
}

// sinks returns the writers, one per app server: the legacy's sinks.
func (m *fileMode) sinks() []changeSink {
	out := make([]changeSink, len(m.ws))
	for i, w := range m.ws {
		out[i] = w
	}
	return out
}

// pgResolver resolves a crashed legacy's in-doubt transactions by asking
// PostgreSQL: Tx.ID holds the transaction's txid_current(), and
// pg_xact_status says whether it committed. A transaction still in progress
// (its backend has not yet noticed the legacy died) is asked again until it
// ends or wait passes; one too old for the server to know stays in doubt.
func pgResolver(url string, wait time.Duration) format.Resolver {
	return func(ctx context.Context, pos format.Position, tx *format.Tx) (format.Decision, error) {
		txid, err := strconv.ParseInt(tx.ID, 10, 64)
		if err != nil {
			return format.DecisionUnknown, fmt.Errorf("bench: in-doubt transaction at %v: id %q is not a txid_current(): %w", pos, tx.ID, err)
		}
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return format.DecisionUnknown, fmt.Errorf("bench: resolving the in-doubt transaction at %v: %w", pos, err)
		}
		defer conn.Close(context.Background())
		for {
			var status *string
			if err := conn.QueryRow(ctx, "SELECT pg_xact_status($1::bigint::text::xid8)", txid).Scan(&status); err != nil {
				return format.DecisionUnknown, fmt.Errorf("bench: resolving the in-doubt transaction %d at %v: %w", txid, pos, err)
			}
			switch {
			case status == nil:
				return format.DecisionUnknown, nil // too old: leave it to an operator
			case *status == "committed":
				return format.DecisionCommitted, nil
			case *status == "aborted":
				return format.DecisionAborted, nil
			}
			select {
			case <-ctx.Done():
				return format.DecisionUnknown, fmt.Errorf("bench: in-doubt transaction %d at %v still in progress: %w", txid, pos, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// setup writes the initial rows, as the database holds them before the
// legacy starts, to the change files: committed insert transactions of up
// to 100 rows, so that the receiver's rows can be compared with the
// database's.
func (m *fileMode) setup(ctx context.Context, conn *pgx.Conn) error {
	n, err := writeInitial(m.ws, m.wl, m.proto.Versions)
	m.initial = n
	return err
}

// writeInitial writes every stream's initial rows as committed insert
// transactions of up to 100 rows, with their row versions if versions, and
// returns how many changes it wrote. Stream i's rows go to ws[i % len(ws)],
// the app server its worker writes with: a row without a version is then
// only ever written by one source, whose order decides.
func writeInitial(ws []*format.Writer, wl workload.Config, versions bool) (int64, error) {
	var tx format.Tx
	var n int64
	for i := 0; i < wl.Streams; i++ {
		s, err := workload.NewStream(wl, i)
		if err != nil {
			return n, err
		}
		for _, tr := range s.Initial() {
			for j := 0; j < len(tr.Rows); j += 100 {
				tx.Changes = tx.Changes[:0]
				tx.CommitTime = time.Now().UnixNano()
				for _, row := range tr.Rows[j:min(j+100, len(tr.Rows))] {
					c := workload.Change{Table: tr.Table, Op: format.OpInsert, After: row}
					fc := format.Change{Table: tr.Table.Name, Op: format.OpInsert, Content: format.ContentJSON,
						Key: row.AppendKey(nil, tr.Table), After: row.AppendJSON(nil, tr.Table)}
					if rev, ok := c.Rev(); ok && versions {
						fc.Version = uint64(rev)
					}
					tx.Changes = append(tx.Changes, fc)
				}
				if _, err := ws[i%len(ws)].Commit(&tx); err != nil {
					return n, fmt.Errorf("bench: writing the initial rows to the change files: %w", err)
				}
				n += int64(len(tx.Changes))
			}
		}
	}
	return n, nil
}

func (m *fileMode) fail(err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *fileMode) failed() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

// start starts shipping every source, as ferry ship runs it.
func (m *fileMode) start(ctx context.Context) error {
	srcs := make([]shipper.SourceConfig, len(m.sources))
	for i, src := range m.sources {
		srcs[i] = shipper.SourceConfig{Name: src, Dir: m.dir}
	}
	g, err := shipper.NewGroup(m.shipNC, jsclient.Config{Stream: fileStream}, srcs, shipper.WithCodec(m.codec))
	if err != nil {
		return fmt.Errorf("bench: creating the shippers: %w", err)
	}
	sctx, cancel := context.WithCancel(m.runCtx)
	m.ship, m.shipCancel, m.shipDone = g, cancel, make(chan struct{})
	done := m.shipDone
	go func() {
		defer close(done)
		if err := g.Run(sctx); err != nil {
			m.fail(fmt.Errorf("bench: shipping: %w", err))
		}
	}()
	return nil
}

// shippers returns the sources' Shippers, in the order of m.sources, once
// the Group has started them (nil before: the stream is being created).
func (m *fileMode) shippers() []*shipper.Shipper {
	if m.ship == nil {
		return nil
	}
	return m.ship.Shippers()
}

// startReceiver starts a receiver on the receiver's data directory; one
// that ran before resumes from its store.
func (m *fileMode) startReceiver(ctx context.Context) error {
	if m.rcvDone != nil {
		return nil
	}
	rcv, err := receiver.New(receiver.WithNATS(m.recvNC), receiver.WithDataDir(m.recvDir),
		receiver.WithStream(fileStream), receiver.WithChangeLogRetention(0, time.Hour))
	if err != nil {
		return fmt.Errorf("bench: creating the receiver: %w", err)
	}
	m.rcv = rcv
	rctx, cancel := context.WithCancel(m.runCtx)
	m.rcvCancel, m.rcvDone = cancel, make(chan struct{})
	done := m.rcvDone
	go func() {
		defer close(done)
		if err := rcv.Run(rctx); err != nil {
			m.fail(fmt.Errorf("bench: receiver: %w", err))
		}
	}()
	return nil
}

// stopReceiver stops the receiver and waits for it.
func (m *fileMode) stopReceiver() {
	if m.rcvDone == nil {
		return
	}
	m.applied = m.appliedChanges()
	m.rcvCancel()
	<-m.rcvDone
	m.rcv, m.rcvDone = nil, nil
}

// settle waits, with the legacy idle, until the receiver has applied
// everything in the change files: every frame up to the files' end,
// outcomes included.
func (m *fileMode) settle(ctx context.Context, timeout time.Duration) error {
	for _, w := range m.ws {
		if err := w.Sync(); err != nil { // writes the outcomes recorded so far
			return fmt.Errorf("bench: syncing the change files: %w", err)
		}
	}
	for _, src := range m.sources {
		if err := m.settleSource(ctx, timeout, src); err != nil {
			return err
		}
	}
	return nil
}

func (m *fileMode) settleSource(ctx context.Context, timeout time.Duration, src string) error {
	segs, err := format.ListSegments(m.dir, src)
	if err != nil || len(segs) == 0 {
		return fmt.Errorf("bench: listing the change files of source %s: %v", src, err)
	}
	last := segs[len(segs)-1]
	size, err := format.SegmentDataSize(last.Path)
	if err != nil {
		return fmt.Errorf("bench: reading the change files' end: %w", err)
	}
	end := format.Position{Segment: last.Segment, Offset: size}
	var at format.Position
	var checked time.Time
	err = waitFor(ctx, timeout, "the receiver applying the change files of source "+src+" up to "+end.String(), func() (bool, error) {
		p := m.rcv.Positions()[src]
		at = format.Position{Segment: p.Segment, Offset: p.Offset}
		if !at.Less(end) {
			return true, nil
		}
		if time.Since(checked) > 250*time.Millisecond { // a stopped source never gets there
			checked = time.Now()
			for _, st := range m.rcv.Status().Sources {
				// A gap heals once the shipper re-ships the range (a hole
				// left by a failed publish, a broker that lost messages):
				// waited out until the timeout, which names it.
				if st.State == "stopped" && st.ErrorKind != consume.KindGap {
					return false, fmt.Errorf("bench: the receiver stopped source %s: %s", st.Source, st.Error)
				}
			}
		}
		return false, m.failed()
	})
	if err != nil {
		var states []string
		for _, st := range m.rcv.Status().Sources {
			states = append(states, st.Source+" "+st.State+" "+st.Error)
		}
		return fmt.Errorf("%w; it applied up to %v (sources: %s)", err, at, strings.Join(states, "; "))
	}
	return nil
}

// receiverCaughtUp says whether the receiver has applied every source up to
// what JetStream acknowledged of it.
func (m *fileMode) receiverCaughtUp() bool {
	pos := m.rcv.Positions()
	shps := m.shippers()
	if shps == nil {
		return false
	}
	for i, shp := range shps {
		p := pos[m.sources[i]]
		if (format.Position{Segment: p.Segment, Offset: p.Offset}).Less(shp.Stats().Acked) {
			return false
		}
	}
	return true
}

// receiving says whether a receiver runs.
func (m *fileMode) receiving() bool { return m.rcvDone != nil }

func (m *fileMode) shippedChanges() int64 {
	var n int64
	for _, shp := range m.shippers() {
		n += int64(shp.Stats().Changes)
	}
	return n
}

// appliedChanges returns the changes applied to the store (by every
// receiver that ran on it).
func (m *fileMode) appliedChanges() int64 {
	if m.rcv == nil {
		return m.applied
	}
	var n int64
	for _, src := range m.sources {
		n += int64(m.rcv.Positions()[src].Changes)
	}
	return n
}

// watchApplied reports to lat when each transaction becomes readable in the
// receiver's store: it wakes on every store commit that adds changes
// (Store.Changed, what the receiver's change feed waits on) and reads the
// new changes of the change log. The returned function stops it.
func (m *fileMode) watchApplied(lat *latencies) func() error {
	ctx, cancel := context.WithCancel(m.runCtx)
	done := make(chan error, 1)
	st := m.rcv.Store()
	_, after := st.ChangeRange()
	go func() {
		seen := ""
		for {
			notify := st.Changed()
			for {
				chs, err := st.Changes(after, 10000)
				if err != nil {
					done <- fmt.Errorf("bench: reading the receiver's change log: %w", err)
					return
				}
				now := time.Now().UnixNano()
				for _, c := range chs {
					after = c.ID
					if c.TxID == seen {
						continue // the same transaction's next change
					}
					seen = c.TxID
					if v, err := strconv.ParseInt(c.TxID, 10, 64); err == nil {
						lat.visible(v, now)
					}
				}
				if len(chs) < 10000 {
					break
				}
			}
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-notify:
			}
		}
	}()
	return func() error {
		cancel()
		return <-done
	}
}

// fileBytes returns the bytes of the change files (their data: not the
// space a preallocating writer reserved ahead of it).
func (m *fileMode) fileBytes() int64 {
	ents, _ := os.ReadDir(m.dir)
	var n int64
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".ferry" {
			continue
		}
		if size, err := format.SegmentDataSize(filepath.Join(m.dir, e.Name())); err == nil {
			n += size
		}
	}
	return n
}

// stop stops the shipper and the receiver.
func (m *fileMode) stop() {
	m.stopReceiver()
	if m.shipDone != nil {
		m.shipCancel() // each Shipper drains what is in flight
		<-m.shipDone
	}
	m.cancel()
	m.wg.Wait()
}

func (m *fileMode) close() {
	m.stop()
	for _, w := range m.ws {
		w.Close()
	}
	for _, nc := range []*nats.Conn{m.shipNC, m.recvNC} {
		if nc != nil {
			nc.Close()
		}
	}
	os.RemoveAll(filepath.Dir(m.dir))
}
