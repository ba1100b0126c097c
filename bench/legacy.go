package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/ferrysync/ferry/format"
	"github.com/jackc/pgx/v5"
)

// changeSink is where the file mode's legacy application writes its change
// files: *format.Writer.
type changeSink interface {
	Commit(tx *format.Tx) (format.Position, error)
}

// legacy is the legacy application: one database connection and one
// workload stream per worker. Each transaction runs its statements in one
// pipelined round trip inside BEGIN … COMMIT; in file mode it then commits
// the same transaction to the change files (same code path, after the
// database commit, as an application would).
type legacy struct {
	streams []*workload.Stream
	conns   []*pgx.Conn
	sink    changeSink // nil unless file mode
	before  bool       // write before images to the change files

	txs, changes atomic.Int64
}

func openLegacy(ctx context.Context, url string, wl workload.Config, sink changeSink, before bool) (*legacy, error) {
	l := &legacy{sink: sink, before: before}
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

// run drives the workload with the first workers workers for d at rate
// changes/s over them (0: as fast as possible). onCommit, if not nil, is called with each transaction's
// version and commit time right after the database commit returned.
func (l *legacy) run(ctx context.Context, d time.Duration, workers int, rate float64, onCommit func(version, commitNs int64)) error {
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

func (l *legacy) worker(ctx context.Context, i int, rate float64, onCommit func(version, commitNs int64)) error {
	s, conn := l.streams[i], l.conns[i]
	pacer := workload.NewPacer(rate)
	var stmts []workload.Statement
	var ftx format.Tx
	for {
		if err := pacer.Wait(ctx, s.Config().TxSize); err != nil {
			return nil // the phase is over
		}
		tx := s.Next()
		stmts = tx.Statements(stmts[:0])
		// The phase's deadline must not abort a transaction half way: it
		// would leave the stream's model and the database apart.
		if err := applyTx(context.WithoutCancel(ctx), conn, stmts); err != nil {
			return fmt.Errorf("bench: legacy worker %d, transaction %d: %w", i, tx.Version, err)
		}
		now := time.Now().UnixNano()
		if onCommit != nil {
			onCommit(tx.Version, now)
		}
		if l.sink != nil {
			tx.AppendFormat(&ftx, now, l.before)
			if _, err := l.sink.Commit(&ftx); err != nil {
				return fmt.Errorf("bench: legacy worker %d writing transaction %d to the change files: %w", i, tx.Version, err)
			}
		}
		l.txs.Add(1)
		l.changes.Add(int64(len(tx.Changes)))
	}
}

func applyTx(ctx context.Context, conn *pgx.Conn, stmts []workload.Statement) error {
	ptx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	var b pgx.Batch
	for _, st := range stmts {
		b.Queue(st.SQL, st.Args...)
	}
	if err := ptx.SendBatch(ctx, &b).Close(); err != nil {
		ptx.Rollback(ctx)
		return err
	}
	return ptx.Commit(ctx)
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
