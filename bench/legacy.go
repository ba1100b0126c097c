package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/jackc/pgx/v5"
)

// changeSink is where the file mode's legacy application writes its change
// files: *format.Writer, or one per app server (fileMode).
type changeSink interface {
	// Commit appends a committed transaction (the after-commit
	// protocol).
	Commit(tx *format.Tx) (format.Position, error)
	// Prepare appends a prepared transaction (the prepared protocol).
	Prepare(tx *format.Tx) (*format.Prepared, error)
}

// crashPoint names a moment of a transaction in the prepared protocol, where
// tests stop the legacy process to kill it (legacy.hook).
type crashPoint string

const (
	// pointPrepared: the frame is appended (written to the OS), COMMIT
	// not sent.
	pointPrepared crashPoint = "prepared"
	// pointCommitted: COMMIT returned, the outcome not recorded.
	pointCommitted crashPoint = "committed"
	// pointCommitting: COMMIT sent while the writer's fsync of the frame
	// runs; its outcome not known to the legacy.
	pointCommitting crashPoint = "committing"
)

// legacy is the legacy application: one database connection and one
// workload stream per worker. Each transaction runs its statements in one
// pipelined round trip inside BEGIN … COMMIT; in file mode the same
// transaction goes to the change files by the writer protocol (see
// WriterProtocol): appended before COMMIT while the transaction holds its
// row locks, its outcome recorded after (prepared), or appended after COMMIT
// returned (after-commit, the old way).
type legacy struct {
	streams []*workload.Stream
	conns   []*pgx.Conn
	// sinks are the app servers' writers (file mode): worker i writes
	// with sinks[i % len(sinks)].
	sinks  []changeSink
	proto  WriterProtocol
	before bool // write before images to the change files

	// hook, set by tests only, is called at each crashPoint of every
	// prepared transaction (n counts the worker's transactions from 1).
	hook func(worker int, n int64, at crashPoint)

	txs, changes atomic.Int64
	// stage sums every transaction's wall time per stage, in ns.
	stage [numStages]atomic.Int64
}

// stage is a part of a legacy transaction's wall time (TxStages).
type stage int

const (
	stageExec stage = iota
	stageAppend
	stageCommit
	stageAfter
	numStages
)

// stageTimes returns the ns spent so far in each stage, over all workers.
func (l *legacy) stageTimes() [numStages]int64 {
	var out [numStages]int64
	for i := range out {
		out[i] = l.stage[i].Load()
	}
	return out
}

// clock times the stages of one transaction.
type clock struct {
	l    *legacy
	last time.Time
}

// lap adds the time since the previous lap to stage s.
func (c *clock) lap(s stage) {
	now := time.Now()
	c.l.stage[s].Add(int64(now.Sub(c.last)))
	c.last = now
}

func openLegacy(ctx context.Context, url string, wl workload.Config, sinks []changeSink, proto WriterProtocol, before bool) (*legacy, error) {
	l := &legacy{sinks: sinks, proto: proto, before: before}
	for i := 0; i < wl.Streams; i++ {
		s, err := workload.NewStream(wl, i)
		if err != nil {
			l.close()
			return nil, err
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("bench: legacy worker %d connecting: %w", i, err)
		}
		l.streams = append(l.streams, s)
		l.conns = append(l.conns, conn)
	}
	return l, nil
}

func (l *legacy) close() {
	for _, c := range l.conns {
		c.Close(context.Background())
	}
}

// backendPids returns the server pids of the workers' connections.
func (l *legacy) backendPids() []int {
	out := make([]int, len(l.conns))
	for i, c := range l.conns {
		out[i] = int(c.PgConn().PID())
	}
	return out
}

// commitFunc is told of every transaction right after its database commit
// returned: its workload version, its PostgreSQL transaction id (file mode
// only, else 0) and the time.
type commitFunc func(version, txid, commitNs int64)

// run drives the workload with the first workers workers for d at rate
// changes/s over them (0: as fast as possible). onCommit, if not nil, is
// called after every commit.
func (l *legacy) run(ctx context.Context, d time.Duration, workers int, rate float64, onCommit commitFunc) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	workers = min(workers, len(l.streams))
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.worker(ctx, i, rate/float64(workers), onCommit)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *legacy) worker(ctx context.Context, i int, rate float64, onCommit commitFunc) error {
	s, conn := l.streams[i], l.conns[i]
	pacer := workload.NewPacer(rate)
	var stmts []workload.Statement
	var ftx format.Tx
	var n int64
	for {
		if err := pacer.Wait(ctx, s.Config().TxSize); err != nil {
			return nil // the phase is over
		}
		tx := s.Next()
		n++
		stmts = tx.Statements(stmts[:0])
		// The phase's deadline must not abort a transaction half way: it
		// would leave the stream's model and the database apart.
		if err := l.transact(context.WithoutCancel(ctx), conn, tx, stmts, &ftx, i, n, onCommit); err != nil {
			return fmt.Errorf("bench: legacy worker %d, transaction %d: %w", i, tx.Version, err)
		}
		l.txs.Add(1)
		l.changes.Add(int64(len(tx.Changes)))
	}
}

// transact runs tx in the database and, in file mode, writes it to the
// change files by the writer protocol.
func (l *legacy) transact(ctx context.Context, conn *pgx.Conn, tx *workload.Tx, stmts []workload.Statement, ftx *format.Tx, worker int, n int64, onCommit commitFunc) error {
	var sink changeSink
	if len(l.sinks) > 0 {
		sink = l.sinks[worker%len(l.sinks)]
	}
	clk := clock{l: l, last: time.Now()}
	ptx, txid, err := execTx(ctx, conn, tx, stmts, sink != nil)
	if err != nil {
		return err
	}
	clk.lap(stageExec)
	committed := func() {
		if onCommit != nil {
			onCommit(tx.Version, txid, time.Now().UnixNano())
		}
	}
	toFile := func(at int64) {
		tx.AppendFormat(ftx, at, l.before)
		// Tx.ID is the database's transaction id, so that a crashed
		// writer's in-doubt frames can be resolved (pgResolver).
		ftx.ID = strconv.FormatInt(txid, 10)
		if l.proto.Versions {
			for j := range tx.Changes {
				if rev, ok := tx.Changes[j].Rev(); ok {
					ftx.Changes[j].Version = uint64(rev)
				}
			}
		}
	}
	switch {
	case sink == nil:
		if err := ptx.Commit(ctx); err != nil {
			return err
		}
		clk.lap(stageCommit)
		committed()
	case l.proto.Order == OrderAfterCommit:
		if err := ptx.Commit(ctx); err != nil {
			return err
		}
		clk.lap(stageCommit)
		committed()
		toFile(time.Now().UnixNano())
		if _, err := sink.Commit(ftx); err != nil {
			return fmt.Errorf("writing it to the change files: %w", err)
		}
		clk.lap(stageAfter)
	default:
		// The frame is appended while the transaction still holds its
		// row locks: a transaction waiting on them can only commit, and
		// append, after this one. The writer's fsync runs while the
		// database commits.
		toFile(time.Now().UnixNano())
		p, err := sink.Prepare(ftx)
		if err != nil {
			ptx.Rollback(ctx)
			return fmt.Errorf("appending it to the change files: %w", err)
		}
		clk.lap(stageAppend)
		l.at(worker, n, pointPrepared)
		if l.hook != nil {
			if err := l.commitAt(ctx, ptx, worker, n); err != nil {
				p.Abort()
				return err
			}
		} else if err := ptx.Commit(ctx); err != nil {
			// Rolled back (a COMMIT that failed) — or unknown, if the
			// connection broke: then the next writer resolves it.
			p.Abort()
			return err
		}
		clk.lap(stageCommit)
		committed()
		l.at(worker, n, pointCommitted)
		if err := p.Commit(); err != nil {
			return fmt.Errorf("recording its outcome in the change files: %w", err)
		}
		clk.lap(stageAfter)
	}
	return nil
}

func (l *legacy) at(worker int, n int64, p crashPoint) {
	if l.hook != nil {
		l.hook(worker, n, p)
	}
}

// commitAt commits ptx, telling the hook once COMMIT is on its way while the
// writer's fsync of the prepared frame is under way.
func (l *legacy) commitAt(ctx context.Context, ptx pgx.Tx, worker int, n int64) error {
	done := make(chan error, 1)
	go func() { done <- ptx.Commit(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Millisecond):
		// The COMMIT is at the server (tests hold it there).
		l.at(worker, n, pointCommitting)
		return <-done
	}
}

// execTx begins a transaction and runs stmts in it in one pipelined round
// trip (with txid_current() first if txid), setting the rows Returning
// statements return into tx's changes. The caller commits it.
func execTx(ctx context.Context, conn *pgx.Conn, tx *workload.Tx, stmts []workload.Statement, txid bool) (pgx.Tx, int64, error) {
	ptx, err := conn.Begin(ctx)
	if err != nil {
		return nil, 0, err
	}
	var b pgx.Batch
	var id int64
	if txid {
		b.Queue("SELECT txid_current()").QueryRow(func(r pgx.Row) error { return r.Scan(&id) })
	}
	for j, st := range stmts {
		q := b.Queue(st.SQL, st.Args...)
		if st.Returning {
			c := &tx.Changes[j]
			q.QueryRow(func(r pgx.Row) error {
				row := make(workload.Row, len(st.Table.Columns))
				if err := r.Scan(row.ScanDest(st.Table)...); err != nil {
					return fmt.Errorf("%s: %w", st.SQL, err)
				}
				c.SetReturned(row)
				return nil
			})
		}
	}
	if err := ptx.SendBatch(ctx, &b).Close(); err != nil {
		ptx.Rollback(ctx)
		return nil, 0, err
	}
	return ptx, id, nil
}

// loadInitial creates the schema in the database at url and loads every
// stream's initial rows with COPY.
func loadInitial(ctx context.Context, url string, wl workload.Config) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("bench: connecting to load the initial data: %w", err)
	}
	defer conn.Close(ctx)
	for _, ddl := range workload.DDL() {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			return fmt.Errorf("bench: creating the schema (%s): %w", ddl, err)
		}
	}
	for i := 0; i < wl.Streams; i++ {
		s, err := workload.NewStream(wl, i)
		if err != nil {
			return err
		}
		for _, tr := range s.Initial() {
			rows := make([][]any, len(tr.Rows))
			for j, r := range tr.Rows {
				rows[j] = r.Args(tr.Table)
			}
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{tr.Table.Name}, tr.Table.ColumnNames(), pgx.CopyFromRows(rows)); err != nil {
				return fmt.Errorf("bench: loading %d initial rows into %s: %w", len(rows), tr.Table.Name, err)
			}
		}
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return fmt.Errorf("bench: vacuuming the initial data: %w", err)
	}
	return nil
}
