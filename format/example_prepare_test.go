package format_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
)

// placeOrder is the order contract (SPEC.md, "Commit order") around a
// database/sql transaction on PostgreSQL: the frame is appended with
// Prepare after the transaction's last write and before COMMIT, while its
// row locks still hold back every other transaction on the same rows; the
// writer's fsync runs during the COMMIT; the outcome follows.
func placeOrder(ctx context.Context, db *sql.DB, w *format.Writer, sku string, qty int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op once committed
	var xid string      // how a restarted writer asks PostgreSQL about an in-doubt frame
	if err := tx.QueryRowContext(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
		return err
	}
	var left, version int64
	err = tx.QueryRowContext(ctx,
		`UPDATE stock SET qty = qty - $1, version = nextval('row_version') WHERE sku = $2 RETURNING qty, version`,
		qty, sku).Scan(&left, &version)
	if err != nil {
		return err
	}
	p, err := w.Prepare(&format.Tx{
		CommitTime: time.Now().UnixNano(),
		ID:         "pg:" + xid,
		Changes: []format.Change{{Table: "stock", Op: format.OpUpdate, Key: []byte(sku),
			After: fmt.Appendf(nil, `{"qty":%d}`, left), Version: uint64(version)}},
	})
	if err != nil {
		// Not committed: the deferred rollback runs. A frame that did reach
		// the file stays in doubt and resolves as aborted.
		return err
	}
	if err := tx.Commit(); err != nil {
		// The connection may have broken during COMMIT: ask the database
		// rather than guess.
		d, rerr := resolveFromPostgres(ctx, db, "pg:"+xid)
		switch {
		case rerr != nil || d == format.DecisionUnknown:
			return err // stays in doubt; the next writer resolves it
		case d == format.DecisionAborted:
			return p.Abort()
		}
		return p.Commit() // it did commit after all
	}
	return p.Commit() // waits for the frame's fsync under SyncAlways
}

// resolveFromPostgres answers whether the transaction whose id a frame
// carries committed (SPEC.md, "In-doubt transactions").
func resolveFromPostgres(ctx context.Context, db *sql.DB, id string) (format.Decision, error) {
	xid, ok := strings.CutPrefix(id, "pg:")
	if !ok {
		return format.DecisionUnknown, fmt.Errorf("transaction id %q was not written by this application", id)
	}
	var status sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&status); err != nil {
		return format.DecisionUnknown, err
	}
	switch status.String {
	case "committed":
		return format.DecisionCommitted, nil
	case "aborted":
		return format.DecisionAborted, nil
	}
	return format.DecisionUnknown, nil // in progress, or too old to be known
}

// A legacy application on PostgreSQL opens its writer with a resolver, so
// that transactions a crash left in doubt are settled from the database
// before anything new is written, then writes through placeOrder.
func ExampleWriter_Prepare() {
	ctx := context.Background()
	db, err := sql.Open("pgx", "postgres://shop@localhost/shop")
	if err != nil {
		return
	}
	defer db.Close()
	w, err := format.OpenWriter("/var/lib/shop/changes", "shop",
		format.WithSync(format.SyncAlways, 0),
		format.WithResolver(func(ctx context.Context, _ format.Position, tx *format.Tx) (format.Decision, error) {
			return resolveFromPostgres(ctx, db, tx.ID)
		}))
	if err != nil {
		return
	}
	defer w.Close()
	_ = placeOrder(ctx, db, w, "sku-1", 2)
}
