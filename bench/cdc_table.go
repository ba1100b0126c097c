package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/bench/workload"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The cdc-table mode imitates SQL Server's change data capture: a companion
// table cdc.<table>_ct per captured table with __$start_lsn, __$seqval,
// __$operation (1 delete, 2 insert, 3 before update, 4 after update) and the
// row's columns, filled inside the legacy's own transactions by row
// triggers (SQL Server's capture job fills them from its log; triggers are
// the closest PostgreSQL gets, and cost at least as much as the extra rows).
// __$start_lsn holds the writing transaction's id (PostgreSQL has no commit
// LSN inside a transaction); an update writes two rows sharing one
// __$seqval, as SQL Server does. Not imitated: __$update_mask and the
// cdc.lsn_time_mapping table (one more row per transaction in SQL Server),
// which makes this mode slightly cheaper than the real thing.
//
// A poller ships the rows to JetStream: it reads the rows of transactions
// that ended (transaction id below the xmin of its snapshot, so none is
// missed however transactions interleave), merges each update's before and
// after rows, and publishes one JSON message per change, as Debezium's SQL
// Server connector does. A cleanup job deletes shipped rows every
// CleanupInterval (SQL Server's keeps them three days by default, which
// costs disk instead).

const cdcStream = "CDC"

func ctName(t *workload.Table) string { return "cdc." + t.Name + "_ct" }

// ctDDL returns the statements creating the companion tables and triggers.
func ctDDL() []string {
	out := []string{"CREATE SCHEMA cdc", "CREATE SEQUENCE cdc.seqval"}
	for _, t := range workload.Tables() {
		var cols strings.Builder
		for _, c := range t.Columns {
			typ := "bigint"
			if c.Type == workload.Text {
				typ = "text"
			}
			fmt.Fprintf(&cols, ", %s %s", c.Name, typ)
		}
		out = append(out,
			fmt.Sprintf(`CREATE TABLE %s ("__$start_lsn" bigint NOT NULL, "__$seqval" bigint NOT NULL, "__$operation" smallint NOT NULL%s,
				PRIMARY KEY ("__$start_lsn", "__$seqval", "__$operation"))`, ctName(t), cols.String()),
			fmt.Sprintf(`CREATE FUNCTION cdc.capture_%[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	x bigint := pg_current_xact_id()::text::bigint;
	s bigint := nextval('cdc.seqval');
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO %[2]s SELECT x, s, 2, NEW.*;
	ELSIF TG_OP = 'UPDATE' THEN
		INSERT INTO %[2]s SELECT x, s, 3, OLD.*;
		INSERT INTO %[2]s SELECT x, s, 4, NEW.*;
	ELSE
		INSERT INTO %[2]s SELECT x, s, 1, OLD.*;
	END IF;
	RETURN NULL;
END $$`, t.Name, ctName(t)),
			fmt.Sprintf(`CREATE TRIGGER cdc_capture AFTER INSERT OR UPDATE OR DELETE ON %[1]s FOR EACH ROW EXECUTE FUNCTION cdc.capture_%[1]s()`, t.Name),
		)
	}
	return out
}

// createCDCStream creates the stream the CDC modes publish to: one subject
// per table, file storage, like Ferry's.
func createCDCStream(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: cdcStream, Subjects: []string{"cdc.>"}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("bench: creating stream %s: %w", cdcStream, err)
	}
	return nil
}

type cdcTable struct {
	url      string
	poll     time.Duration
	cleanEvy time.Duration
	nc       *nats.Conn
	js       jetstream.JetStream

	shipped   atomic.Int64 // changes acked by JetStream
	watermark atomic.Int64 // every transaction id below it is shipped
	cleaned   atomic.Int64 // every row below it is deleted
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	errMu     sync.Mutex
	err       error
}

func (m *cdcTable) setup(ctx context.Context, conn *pgx.Conn) error {
	for _, ddl := range ctDDL() {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			return fmt.Errorf("bench: cdc-table setup (%.60s…): %w", ddl, err)
		}
	}
	return nil
}

func (m *cdcTable) fail(err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *cdcTable) failed() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

func (m *cdcTable) start(ctx context.Context) error {
	js, err := jetstream.New(m.nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return err
	}
	m.js = js
	pollConn, err := pgx.Connect(ctx, m.url)
	if err != nil {
		return fmt.Errorf("bench: cdc-table poller connecting: %w", err)
	}
	cleanConn, err := pgx.Connect(ctx, m.url)
	if err != nil {
		pollConn.Close(ctx)
		return fmt.Errorf("bench: cdc-table cleanup connecting: %w", err)
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		defer pollConn.Close(context.Background())
		if err := m.pollLoop(ctx, pollConn); err != nil && ctx.Err() == nil {
			m.fail(err)
		}
	}()
	go func() {
		defer m.wg.Done()
		defer cleanConn.Close(context.Background())
		if err := m.cleanLoop(ctx, cleanConn); err != nil && ctx.Err() == nil {
			m.fail(err)
		}
	}()
	return nil
}

func (m *cdcTable) stop() {
	if m.cancel != nil {
		m.cancel()
		m.wg.Wait()
		m.cancel = nil
	}
}

func (m *cdcTable) shippedChanges() int64 { return m.shipped.Load() }

// maxXids bounds the transactions one poll reads.
const maxXids = 4000

func (m *cdcTable) pollLoop(ctx context.Context, conn *pgx.Conn) error {
	var lo int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(min("__$start_lsn"), 0) FROM (
		SELECT min("__$start_lsn") AS "__$start_lsn" FROM cdc.customers_ct UNION ALL
		SELECT min("__$start_lsn") FROM cdc.orders_ct UNION ALL
		SELECT min("__$start_lsn") FROM cdc.order_lines_ct UNION ALL
		SELECT min("__$start_lsn") FROM cdc.stock_ct) m`).Scan(&lo); err != nil {
		return fmt.Errorf("bench: cdc-table poller: finding the oldest row: %w", err)
	}
	tick := time.NewTicker(m.poll)
	defer tick.Stop()
	for {
		hi, n, err := m.pollOnce(ctx, conn, lo)
		if err != nil {
			return err
		}
		lo = hi
		m.watermark.Store(hi)
		if n > 0 {
			continue // a backlog: poll again at once
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// pollOnce ships the rows of the transactions in [lo, hi) where hi is the
// xmin of the poll's snapshot (capped), and returns hi and the number of
// changes shipped.
func (m *cdcTable) pollOnce(ctx context.Context, conn *pgx.Conn, lo int64) (int64, int, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return lo, 0, fmt.Errorf("bench: cdc-table poll: %w", err)
	}
	defer tx.Rollback(context.Background())
	var hi int64
	if err := tx.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").Scan(&hi); err != nil {
		return lo, 0, fmt.Errorf("bench: cdc-table poll: reading the snapshot's xmin: %w", err)
	}
	if lo == 0 {
		lo = hi
	}
	hi = min(hi, lo+maxXids)
	if hi <= lo {
		return lo, 0, nil
	}
	var futures []jetstream.PubAckFuture
	n := 0
	for _, t := range workload.Tables() {
		rows, err := tx.Query(ctx, `SELECT * FROM `+ctName(t)+` WHERE "__$start_lsn" >= $1 AND "__$start_lsn" < $2 ORDER BY 1, 2, 3`, lo, hi)
		if err != nil {
			return lo, 0, fmt.Errorf("bench: cdc-table poll of %s: %w", ctName(t), err)
		}
		subject := "cdc." + t.Name
		var before []any
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				rows.Close()
				return lo, 0, fmt.Errorf("bench: cdc-table poll of %s: %w", ctName(t), err)
			}
			op := vals[2].(int16)
			if op == 3 { // before image: wait for its after image
				before = vals
				continue
			}
			// A fresh buffer per message: the client keeps it for retries.
			b := appendCTMessage(nil, t, op, before, vals)
			before = nil
			f, err := m.js.PublishAsync(subject, b)
			if err != nil {
				rows.Close()
				return lo, 0, fmt.Errorf("bench: cdc-table poller publishing: %w", err)
			}
			futures = append(futures, f)
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return lo, 0, fmt.Errorf("bench: cdc-table poll of %s: %w", ctName(t), err)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return lo, 0, fmt.Errorf("bench: cdc-table poller: publish not acknowledged: %w", err)
		case <-ctx.Done():
			return lo, 0, ctx.Err()
		}
	}
	m.shipped.Add(int64(n))
	return hi, n, nil
}

// appendCTMessage encodes one change as the JSON message CDC connectors
// publish: {"op":"c|u|d","table":…,"lsn":…,"seq":…,"before":{…},"after":{…}}.
func appendCTMessage(b []byte, t *workload.Table, op int16, before, row []any) []byte {
	code := "u"
	switch op {
	case 1:
		code = "d"
	case 2:
		code = "c"
	}
	b = append(b, `{"op":"`...)
	b = append(b, code...)
	b = append(b, `","table":"`...)
	b = append(b, t.Name...)
	b = append(b, `","lsn":`...)
	b = strconv.AppendInt(b, row[0].(int64), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, row[1].(int64), 10)
	b = append(b, `,"before":`...)
	switch {
	case op == 1:
		b = appendCTRow(b, t, row)
	case before != nil:
		b = appendCTRow(b, t, before)
	default:
		b = append(b, "null"...)
	}
	b = append(b, `,"after":`...)
	if op == 1 {
		b = append(b, "null"...)
	} else {
		b = appendCTRow(b, t, row)
	}
	return append(b, '}')
}

func appendCTRow(b []byte, t *workload.Table, vals []any) []byte {
	r := make(workload.Row, len(t.Columns))
	for i := range t.Columns {
		switch v := vals[3+i].(type) {
		case int64:
			r[i].I = v
		case string:
			r[i].S = v
		}
	}
	return r.AppendJSON(b, t)
}

func (m *cdcTable) cleanLoop(ctx context.Context, conn *pgx.Conn) error {
	tick := time.NewTicker(m.cleanEvy)
	defer tick.Stop()
	var done int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		w := m.watermark.Load()
		if w <= done {
			continue
		}
		for _, t := range workload.Tables() {
			if _, err := conn.Exec(ctx, `DELETE FROM `+ctName(t)+` WHERE "__$start_lsn" < $1`, w); err != nil {
				return fmt.Errorf("bench: cdc-table cleanup of %s: %w", ctName(t), err)
			}
		}
		done = w
		m.cleaned.Store(w)
	}
}

// settle waits until the cleanup job deleted every row shipped so far.
func (m *cdcTable) settle(ctx context.Context) error {
	w := m.watermark.Load()
	return waitFor(ctx, 10*m.cleanEvy+10*time.Second, "cdc-table cleanup", func() (bool, error) {
		return m.cleaned.Load() >= w, m.failed()
	})
}
