// Package writeback is the PostgreSQL stand-in legacy's side of write-back,
// and the reference for legacy teams (SPEC.md, "Write-back records" and
// "Write-back commands"): an Applier carries out the commands of an inbox
// file in one database transaction, each with its version check, records
// every command id in a table of the same transaction (so a command
// delivered twice is carried out once), appends the resulting frames with
// format.Writer.Prepare (origin and command id) before COMMIT and records
// their outcomes after it; a command it refuses (a stale version, a row that
// does not exist, a value the database refuses) gets a rejection frame with
// the reason. A command delivered again after it ended gets the same outcome
// written again (an applied frame, or its rejection), never a second write.
//
// Its tables have one shape: key text primary key, value jsonb, version
// bigint, the version drawn from one sequence (SPEC.md, "Row versions").
package writeback

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Schema objects shared by every table.
const (
	// CommandsTable records every command id the legacy carried out or
	// refused, in the same transaction as the write.
	CommandsTable = "ferry_commands"
	// VersionSequence numbers every write of every row.
	VersionSequence = "ferry_row_version"
)

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CreateSchema creates the commands table, the version sequence and the
// given tables if missing.
func CreateSchema(ctx context.Context, conn *pgx.Conn, tables ...string) error {
	stmts := []string{
		`CREATE SEQUENCE IF NOT EXISTS ` + VersionSequence,
		`CREATE TABLE IF NOT EXISTS ` + CommandsTable + ` (id text PRIMARY KEY, origin text NOT NULL,
			outcome text NOT NULL, reason text, at timestamptz NOT NULL DEFAULT now())`,
		// What a command carried out wrote, so that a delivery after the
		// agent forgot the id gets the same outcome written again
		// (SPEC.md section 22): the row version and the transaction.
		// Added to tables of an earlier schema; NULL there (unknown).
		`ALTER TABLE ` + CommandsTable + ` ADD COLUMN IF NOT EXISTS version bigint, ADD COLUMN IF NOT EXISTS tx text`,
	}
	for _, t := range tables {
		if !identRE.MatchString(t) {
			return fmt.Errorf("writeback: table name %q: want a lower-case SQL identifier", t)
		}
		stmts = append(stmts, `CREATE TABLE IF NOT EXISTS `+t+` (key text PRIMARY KEY, value jsonb NOT NULL, version bigint NOT NULL)`)
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("writeback: creating schema (%s): %w", strings.Fields(s)[2], err)
		}
	}
	return nil
}

// Applier carries out commands on one connection, appending the results
// to w. It is not safe for concurrent use: one Applier per inbox, so the
// commands of a row are carried out in their order.
type Applier struct {
	// AfterCommit appends committed frames after COMMIT (the version 1
	// protocol, Writer.Commit) instead of prepared frames before it. Only
	// for receivers that do not read prepared frames yet: a crash between
	// COMMIT and the append loses the command's record, so it never gets
	// an outcome. The default, prepared frames, has no such window.
	AfterCommit bool

	conn   *pgx.Conn
	w      *format.Writer
	tables map[string]bool
	now    func() time.Time
	// unsettled: frames of a transaction whose COMMIT failed without the
	// database being able to say whether it committed; settled at the
	// next Handle (their commands' outcomes wait until then).
	unsettled []unsettled
	// savepointPasses counts the files carried out again a command at a
	// time, after the database refused a command of a set statement.
	savepointPasses int
}

// SavepointPasses returns how many inbox files were carried out again with
// a savepoint per command because the database refused one of their
// commands: each such file cost a subtransaction per command.
func (a *Applier) SavepointPasses() int { return a.savepointPasses }

type unsettled struct {
	xid      string
	prepared []*format.Prepared
}

// NewApplier returns an Applier for the given tables (created by
// CreateSchema). w should be opened with Resolver(conn's database), so
// that a crash between COMMIT and the outcome is resolved at restart.
func NewApplier(conn *pgx.Conn, w *format.Writer, tables ...string) *Applier {
	a := &Applier{conn: conn, w: w, tables: map[string]bool{}, now: time.Now}
	for _, t := range tables {
		a.tables[t] = true
	}
	return a
}

// result is what the database said of one command.
type result struct {
	// A record from an earlier delivery: its outcome and reason, and for
	// one carried out the version it wrote and its transaction.
	prevOutcome, prevReason, prevTx *string
	prevVersion                     *int64
	version                         *int64  // the row's new version: carried out
	reason                          *string // refused, and why
}

func (r *result) scan(row pgx.Row) error {
	return row.Scan(&r.prevOutcome, &r.prevReason, &r.prevVersion, &r.prevTx, &r.version, &r.reason)
}

// kind is the shape of a command's write: its statement.
type kind int

const (
	kindInsert kind = iota
	kindUpsert      // at no version: written whatever the row holds
	kindDelete
	kindUpdate // an update, or an upsert at a version (checked like one)
)

func kindOf(c *command.Command) kind {
	switch {
	case c.Op == command.OpInsert:
		return kindInsert
	case c.Op == command.OpUpsert && c.Version == 0:
		return kindUpsert
	case c.Op == command.OpDelete:
		return kindDelete
	}
	return kindUpdate
}

// reasonSQL is the expression of a command's rejection reason (NULL when it
// was carried out), worked out from the row as the statement's snapshot saw
// it and the version the command read: applied and missing are SQL
// conditions (written; no row), cur and read SQL values (the row's version,
// the command's).
func reasonSQL(k kind, applied, missing, cur, read string) string {
	r := `CASE WHEN ` + applied + ` THEN NULL
		WHEN ` + missing + ` THEN 'row does not exist (deleted, or never inserted)'`
	if k == kindInsert {
		r += ` ELSE 'row exists at version ' || ` + cur
	} else {
		r += ` ELSE 'stale version: row at ' || ` + cur + ` || ', command read ' || ` + read
	}
	return r + ` END`
}

// setStatement returns the statement that carries out a run of commands
// of one table and one kind at once (runs), or refuses each, and records
// their ids, unless an earlier delivery did: statement's columns, one row
// per command in the run's order. Its parameters are arrays, one element
// per command: ids, keys, values, versions read, origins. Each command's
// version check and rejection reason are its own, as with statement; one
// statement instead of one per command is most of the applier's time saved.
func setStatement(table string, k kind) string {
	// The rows and records are looked up with = ANY of the arrays, not by
	// joining them with i. NOT IN, not NOT EXISTS (ids are never NULL):
	// the planner took the anti-join for one row, joined w by nested
	// loops, and a file of 1,000 commands took 500 ms instead of 20.
	notPrev := `i.id NOT IN (SELECT id FROM prev)`
	var write string
	switch k {
	case kindInsert:
		write = `INSERT INTO ` + table + ` (key, value, version) SELECT i.key, i.after::jsonb, nextval('` + VersionSequence + `')
			FROM i WHERE ` + notPrev + ` ORDER BY i.n ON CONFLICT (key) DO NOTHING RETURNING key, version`
	case kindUpsert:
		write = `INSERT INTO ` + table + ` (key, value, version) SELECT i.key, i.after::jsonb, nextval('` + VersionSequence + `')
			FROM i WHERE ` + notPrev + ` ORDER BY i.n
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version RETURNING key, version`
	case kindDelete:
		write = `DELETE FROM ` + table + ` r USING i WHERE r.key = ANY($2::text[]) AND r.key = i.key AND r.version = i.version AND ` + notPrev + `
			RETURNING r.key AS key, nextval('` + VersionSequence + `') AS version`
	default:
		write = `UPDATE ` + table + ` r SET value = i.after::jsonb, version = nextval('` + VersionSequence + `')
			FROM i WHERE r.key = ANY($2::text[]) AND r.key = i.key AND r.version = i.version AND ` + notPrev + `
			RETURNING r.key AS key, r.version AS version`
	}
	reason := reasonSQL(k, `w.key IS NOT NULL`, `cur.key IS NULL`, `cur.version`, `i.version`)
	return `WITH i AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
			WITH ORDINALITY AS u(id, key, after, version, origin, n)),
		prev AS (SELECT id, outcome, reason, version, tx FROM ` + CommandsTable + ` WHERE id = ANY($1::text[])),
		cur AS (SELECT key, version FROM ` + table + ` WHERE key = ANY($2::text[])),
		w AS (` + write + `),
		rec AS (INSERT INTO ` + CommandsTable + ` (id, origin, outcome, reason, version, tx)
			SELECT i.id, i.origin, CASE WHEN w.key IS NOT NULL THEN 'applied' ELSE 'rejected' END, ` + reason + `,
				w.version, 'pg:' || pg_current_xact_id()::text
			FROM i LEFT JOIN w ON w.key = i.key LEFT JOIN cur ON cur.key = i.key
			WHERE ` + notPrev + ` RETURNING id, reason)
		SELECT prev.outcome, prev.reason, prev.version, prev.tx, w.version, rec.reason
		FROM i LEFT JOIN prev ON prev.id = i.id LEFT JOIN w ON w.key = i.key LEFT JOIN rec ON rec.id = i.id
		ORDER BY i.n`
}

// runs splits cmds into the runs one setStatement carries out: consecutive
// commands of one table and one kind, no key or id twice. All the commands
// of a statement see the rows as they were before it, so a second command
// on a row (which must see the first one's write, and be checked against
// its version) starts the next run: the commands of a row keep their order.
func runs(cmds []command.Command) [][2]int {
	var out [][2]int
	keys, ids := map[string]bool{}, map[string]bool{}
	start := 0
	for i := range cmds {
		c := &cmds[i]
		if i > start && (c.Table != cmds[start].Table || kindOf(c) != kindOf(&cmds[start]) || keys[c.Key] || ids[c.ID]) {
			out = append(out, [2]int{start, i})
			start = i
			clear(keys)
			clear(ids)
		}
		keys[c.Key], ids[c.ID] = true, true
	}
	if start < len(cmds) {
		out = append(out, [2]int{start, len(cmds)})
	}
	return out
}

// carrySet runs the set statements of cmds' runs, pipelined, in the open
// transaction tx, filling res. The first statement the database refuses
// for a command's doing is a *commandFault naming the run's first command
// (which of its commands caused it the database does not say; the caller
// goes over the file again, a command at a time).
func carrySet(ctx context.Context, tx pgx.Tx, cmds []command.Command, res []result) (string, error) {
	b := &pgx.Batch{}
	// The transaction's own id first: the frames carry it ("pg:<xid>"),
	// and the in-doubt resolution asks about it.
	b.Queue(`SELECT pg_current_xact_id()::text`)
	// Every row and record is looked up by its key: never scan a table.
	// The planner believes a table that grew since autovacuum last
	// analysed it (at most once a minute, after 10% more rows) is small,
	// and scanned it whole for = ANY of a file's keys: PostgreSQL's CPU
	// per command quadrupled in the bench. SET LOCAL ends with the
	// transaction.
	b.Queue(`SET LOCAL enable_seqscan = off`)
	rs := runs(cmds)
	for _, r := range rs {
		n := r[1] - r[0]
		ids, keys, afters, origins := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		versions := make([]int64, 0, n)
		for i := r[0]; i < r[1]; i++ {
			c := &cmds[i]
			ids, keys, afters, origins = append(ids, c.ID), append(keys, c.Key), append(afters, string(c.After)), append(origins, c.Origin)
			versions = append(versions, int64(c.Version))
		}
		b.Queue(setStatement(cmds[r[0]].Table, kindOf(&cmds[r[0]])), ids, keys, afters, versions, origins)
	}
	br := tx.SendBatch(ctx, b)
	var xid string
	failed := -1
	err := br.QueryRow().Scan(&xid)
	if err == nil {
		_, err = br.Exec()
	}
	for _, r := range rs {
		if err != nil {
			break
		}
		failed = r[0]
		err = scanRun(br, res[r[0]:r[1]])
	}
	if cerr := br.Close(); err == nil { // after a failure: the same error, or the aborted rest
		err = cerr
	}
	if err == nil {
		return xid, nil
	}
	if pe, fault := isCommandFault(err); fault && failed >= 0 {
		return xid, &commandFault{index: failed, err: pe}
	}
	return xid, fmt.Errorf("writeback: carrying out %d commands (first %s): %w", len(cmds), cmds[0].ID, err)
}

// scanRun reads one set statement's rows into res, one per command.
func scanRun(br pgx.BatchResults, res []result) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if n == len(res) {
			return fmt.Errorf("writeback: the set statement returned more than its %d rows", len(res))
		}
		if err := res[n].scan(rows); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n != len(res) {
		return fmt.Errorf("writeback: the set statement returned %d rows for %d commands", n, len(res))
	}
	return nil
}

// statement returns the one statement that carries out c, or refuses it,
// and records its id, unless an earlier delivery did: its columns are the
// earlier record's outcome, reason, version and transaction, the new
// version, and this delivery's reason for a refusal.
func statement(c *command.Command) (string, []any) {
	t := c.Table // checked against the applier's tables
	prev := `prev AS (SELECT outcome, reason, version, tx FROM ` + CommandsTable + ` WHERE id = $1),
		cur AS (SELECT version FROM ` + t + ` WHERE key = $2)`
	var write string
	args := []any{c.ID, c.Key}
	switch kindOf(c) {
	case kindInsert:
		write = `INSERT INTO ` + t + ` (key, value, version) SELECT $2, $3::jsonb, nextval('` + VersionSequence + `')
			WHERE NOT EXISTS (SELECT 1 FROM prev) ON CONFLICT (key) DO NOTHING RETURNING version`
		args = append(args, string(c.After))
	case kindUpsert:
		write = `INSERT INTO ` + t + ` (key, value, version) SELECT $2, $3::jsonb, nextval('` + VersionSequence + `')
			WHERE NOT EXISTS (SELECT 1 FROM prev)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version RETURNING version`
		args = append(args, string(c.After))
	case kindDelete:
		write = `DELETE FROM ` + t + ` WHERE key = $2 AND version = $3 AND NOT EXISTS (SELECT 1 FROM prev)
			RETURNING nextval('` + VersionSequence + `') AS version`
		args = append(args, int64(c.Version))
	default: // kindUpdate
		write = `UPDATE ` + t + ` SET value = $4::jsonb, version = nextval('` + VersionSequence + `')
			WHERE key = $2 AND version = $3 AND NOT EXISTS (SELECT 1 FROM prev) RETURNING version`
		args = append(args, int64(c.Version), string(c.After))
	}
	reason := reasonSQL(kindOf(c), `EXISTS (SELECT 1 FROM w)`, `NOT EXISTS (SELECT 1 FROM cur)`, `(SELECT version FROM cur)`, fmt.Sprint(c.Version))
	args = append(args, c.Origin)
	o := fmt.Sprintf("$%d", len(args))
	sql := `WITH ` + prev + `, w AS (` + write + `),
		rec AS (INSERT INTO ` + CommandsTable + ` (id, origin, outcome, reason, version, tx)
			SELECT $1, ` + o + `, CASE WHEN EXISTS (SELECT 1 FROM w) THEN 'applied' ELSE 'rejected' END, ` + reason + `,
				(SELECT version FROM w), 'pg:' || pg_current_xact_id()::text
			WHERE NOT EXISTS (SELECT 1 FROM prev) RETURNING reason)
		SELECT (SELECT outcome FROM prev), (SELECT reason FROM prev), (SELECT version FROM prev), (SELECT tx FROM prev),
			(SELECT version FROM w), (SELECT reason FROM rec)`
	return sql, args
}

// Handle carries out the commands of one inbox file (inbox.Handler): one
// database transaction for all of them, one prepared frame per command
// carried out, appended before COMMIT, their outcomes after it, then a
// rejection frame per command refused and an applied frame per command
// found carried out at an earlier delivery. A command the database refuses
// (commandFault) is refused alone: the file is carried out again with a
// savepoint around each command. It returns once every command has
// its record in the change files, durable per the writer's sync policy.
func (a *Applier) Handle(ctx context.Context, cmds []command.Command) error {
	// A transaction an earlier run left in doubt that the database could
	// not settle when the writer opened (still "in progress" while the
	// killed process's backend wound down) is settled now: until then the
	// command it carried out has no outcome, and a redelivery of it finds
	// its id recorded and writes nothing.
	if err := a.ResolveInDoubt(ctx); err != nil {
		return err
	}
	ours := make([]command.Command, 0, len(cmds))
	for i := range cmds {
		if a.tables[cmds[i].Table] {
			ours = append(ours, cmds[i])
			continue
		}
		// Not one of ours: refused, so that it still gets an outcome
		// (receivers send only the tables they were configured with: the
		// two sides' configurations disagree).
		if _, err := a.w.Reject(format.Rejection{Time: a.now().UnixNano(), Command: cmds[i].ID, Origin: cmds[i].Origin,
			Reason: fmt.Sprintf("table %q is not written back by this legacy", cmds[i].Table)}); err != nil {
			return err
		}
	}
	cmds = ours
	if len(cmds) == 0 {
		return nil
	}
	res := make([]result, len(cmds))
	tx, xid, err := a.carryOut(ctx, cmds, res, false)
	var fault *commandFault
	if errors.As(err, &fault) {
		// One command the database refused (a value too long for its
		// column, a constraint, a trigger's business rule): again, a
		// savepoint around each command, so that it alone is refused and
		// the others are carried out. Not the first way: a savepoint per
		// command is a subtransaction per command, and past 64 of them
		// every other session's snapshot of this database gets slower
		// while the transaction runs.
		tx.Rollback(context.WithoutCancel(ctx))
		clear(res)
		a.savepointPasses++
		tx, xid, err = a.carryOut(ctx, cmds, res, true)
	}
	if tx != nil {
		defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op once committed
	}
	if err != nil {
		return err
	}
	// Append while the transaction holds its row locks (SPEC.md, "Commit
	// order"): a later write of the same rows commits after this frame.
	commit := a.now().UnixNano()
	var frames []*format.Tx
	var later []format.Tx // AfterCommit
	var rejects []format.Rejection
	var again []format.Applied
	for i := range cmds {
		c, r := &cmds[i], &res[i]
		switch {
		case r.prevOutcome != nil && *r.prevOutcome == "rejected":
			// Refused at an earlier delivery: its rejection frame may not
			// have been written (a crash after COMMIT), or be older than
			// what the agent remembers: write it again (receivers keep the
			// first).
			rejects = append(rejects, format.Rejection{Command: c.ID, Origin: c.Origin, Reason: deref(r.prevReason)})
		case r.prevOutcome != nil:
			// Carried out at an earlier delivery (its record is visible, so
			// that transaction committed): not again, but its outcome is
			// written again (SPEC.md section 22). The agent hands a
			// command to the legacy again only when it does not know its
			// outcome: delivered after its rescan horizon, or after a crash
			// before it read the outcome. Without this record the inbox
			// file would wait for ever.
			var v uint64
			if r.prevVersion != nil {
				v = uint64(*r.prevVersion)
			}
			again = append(again, format.Applied{Command: c.ID, Origin: c.Origin, TxID: deref(r.prevTx), Version: v})
		case r.version != nil:
			ch := format.Change{Table: c.Table, Key: []byte(c.Key), Op: opOf(c.Op), Version: uint64(*r.version)}
			if c.Op != command.OpDelete {
				ch.After = c.After
			}
			ftx := format.Tx{CommitTime: commit, ID: "pg:" + xid, Origin: c.Origin, Command: c.ID, Changes: []format.Change{ch}}
			if a.AfterCommit {
				later = append(later, ftx)
				continue
			}
			frames = append(frames, &ftx)
		default:
			rejects = append(rejects, format.Rejection{Command: c.ID, Origin: c.Origin, Reason: deref(r.reason)})
		}
	}
	// All of the file's frames in one append and one write: a write per
	// command was a tenth of the applier's time per file.
	prepared, err := a.w.PrepareBatch(frames)
	if err != nil {
		return fmt.Errorf("writeback: appending the frames of %d commands (first %s): %w", len(frames), cmds[0].ID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		// The connection may have broken during COMMIT: ask the database.
		d, rerr := a.resolve(context.WithoutCancel(ctx), xid)
		switch {
		case rerr != nil || d == format.DecisionUnknown:
			a.unsettled = append(a.unsettled, unsettled{xid: xid, prepared: prepared})
			return fmt.Errorf("writeback: commit of %d commands: %w (left in doubt: settled at the next file)", len(cmds), err)
		case d == format.DecisionAborted:
			for _, p := range prepared {
				p.Abort()
			}
			return fmt.Errorf("writeback: commit of %d commands: %w", len(cmds), err)
		}
	}
	var errs []error
	for _, p := range prepared {
		errs = append(errs, p.Commit())
	}
	for i := range later {
		_, err := a.w.Commit(&later[i])
		errs = append(errs, err)
	}
	now := a.now().UnixNano()
	for i := range rejects {
		rejects[i].Time = now
		_, err := a.w.Reject(rejects[i])
		errs = append(errs, err)
	}
	for i := range again {
		again[i].Time = now
		_, err := a.w.RecordApplied(again[i])
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// commandFault is a database error that is the command's own doing, not the
// database's state: refusing the command is its outcome, and retrying the
// file would fail the same way for ever.
type commandFault struct {
	index int
	err   *pgconn.PgError
}

func (e *commandFault) Error() string {
	return fmt.Sprintf("writeback: the database refused the file's command %d: %v", e.index, e.err)
}
func (e *commandFault) Unwrap() error { return e.err }

// isCommandFault reports whether err is a PostgreSQL error caused by what
// the command asks (SQLSTATE classes): 22 data exception (a value too long
// for its column, out of range), 23 integrity constraint violation (check,
// not null, foreign key), 44 check option, 54 program limit (a key too long
// for its index), P0 raised by a trigger or function (a business rule). Not
// serialisation failures, deadlocks, lack of resources or a connection
// gone: those pass, and the file is retried.
func isCommandFault(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return nil, false
	}
	switch pe.Code[:2] {
	case "22", "23", "44", "54", "P0":
		return pe, true
	}
	return nil, false
}

// savepoint names the savepoint around each command (the same name each
// time: each is released before the next is set).
const savepoint = "ferry_command"

// carryOut begins the transaction of one inbox file and carries out its
// commands, filling res. Without savepoints: a set statement per run of
// commands (carrySet); the first statement the database refuses for a
// command's doing is a *commandFault (the transaction is then aborted; the
// caller rolls it back). With savepoints: each command's own statement,
// pipelined, a savepoint around each, so that a command the database
// refuses alone is rolled back and recorded as refused, with the database's
// error as the reason, and the commands after it run on. The returned
// transaction is open unless it is nil.
func (a *Applier) carryOut(ctx context.Context, cmds []command.Command, res []result, savepoints bool) (pgx.Tx, string, error) {
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("writeback: begin: %w", err)
	}
	if !savepoints {
		xid, err := carrySet(ctx, tx, cmds, res)
		return tx, xid, err
	}
	var xid string
	for start := 0; start < len(cmds); {
		b := &pgx.Batch{}
		if start == 0 {
			// The transaction's own id first: the frames carry it
			// ("pg:<xid>"), and the in-doubt resolution asks about it.
			b.Queue(`SELECT pg_current_xact_id()::text`)
		}
		for i := start; i < len(cmds); i++ {
			sql, args := statement(&cmds[i])
			if savepoints {
				b.Queue(`SAVEPOINT ` + savepoint)
			}
			b.Queue(sql, args...)
			if savepoints {
				b.Queue(`RELEASE SAVEPOINT ` + savepoint)
			}
		}
		br := tx.SendBatch(ctx, b)
		failed, ferr := -1, error(nil)
		if start == 0 {
			ferr = br.QueryRow().Scan(&xid)
		}
		for i := start; i < len(cmds) && ferr == nil; i++ {
			if savepoints {
				if _, ferr = br.Exec(); ferr != nil {
					break
				}
			}
			if ferr = res[i].scan(br.QueryRow()); ferr != nil {
				failed = i
				break
			}
			if savepoints {
				_, ferr = br.Exec()
			}
		}
		cerr := br.Close() // after a failure: the same error, or the aborted rest
		if ferr == nil {
			ferr = cerr
		}
		if ferr == nil {
			return tx, xid, nil
		}
		pe, fault := isCommandFault(ferr)
		if failed < 0 || !fault {
			return tx, xid, fmt.Errorf("writeback: carrying out %d commands (first %s): %w", len(cmds)-start, cmds[start].ID, ferr)
		}
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT `+savepoint); err != nil {
			return tx, xid, fmt.Errorf("writeback: rolling back command %s after %v: %w", cmds[failed].ID, ferr, err)
		}
		c := &cmds[failed]
		reason := dbReason(c.ID, pe)
		// Recorded refused like a stale version, so that a redelivery
		// writes the same rejection again.
		err := res[failed].scan(tx.QueryRow(ctx, `WITH prev AS (SELECT outcome, reason, version, tx FROM `+CommandsTable+` WHERE id = $1),
			rec AS (INSERT INTO `+CommandsTable+` (id, origin, outcome, reason) SELECT $1, $2, 'rejected', $3
				WHERE NOT EXISTS (SELECT 1 FROM prev) RETURNING reason)
			SELECT (SELECT outcome FROM prev), (SELECT reason FROM prev), (SELECT version FROM prev), (SELECT tx FROM prev),
				NULL::bigint, (SELECT reason FROM rec)`, c.ID, c.Origin, reason))
		if err != nil {
			return tx, xid, fmt.Errorf("writeback: recording command %s refused by the database: %w", c.ID, err)
		}
		start = failed + 1
	}
	return tx, xid, nil
}

// dbReason is the rejection reason of a command the database refused: the
// command, the database's message and its SQLSTATE, within the rejection
// frame's bound.
func dbReason(id string, pe *pgconn.PgError) string {
	r := fmt.Sprintf("command %s refused by the legacy database: %s (SQLSTATE %s)", id, pe.Message, pe.Code)
	if pe.Detail != "" {
		r += ": " + pe.Detail
	}
	if len(r) > format.MaxReasonLen {
		r = strings.ToValidUTF8(r[:format.MaxReasonLen], "")
	}
	return r
}

// ResolveInDoubt asks the database about every transaction the writer
// still holds in doubt (format.Writer.InDoubt) and records the outcomes it
// can decide; the others stay in doubt for the next call.
func (a *Applier) ResolveInDoubt(ctx context.Context) error {
	kept := a.unsettled[:0]
	for _, u := range a.unsettled {
		d, err := a.resolve(ctx, u.xid)
		if err != nil || d == format.DecisionUnknown {
			kept = append(kept, u)
			continue
		}
		for _, p := range u.prepared {
			if d == format.DecisionCommitted {
				err = p.Commit()
			} else {
				err = p.Abort()
			}
			if err != nil && !errors.Is(err, format.ErrResolved) {
				return fmt.Errorf("writeback: settling transaction %s: %w", u.xid, err)
			}
		}
	}
	a.unsettled = kept
	for _, d := range a.w.InDoubt() {
		dec, err := Resolve(ctx, a.conn, d.Tx.ID)
		if err != nil {
			return fmt.Errorf("writeback: resolving the transaction in doubt at %v: %w", d.Position, err)
		}
		if dec == format.DecisionUnknown {
			continue
		}
		if err := a.w.Resolve(d.Position, dec); err != nil && !errors.Is(err, format.ErrResolved) {
			return fmt.Errorf("writeback: recording the outcome of %v: %w", d.Position, err)
		}
	}
	return nil
}

func (a *Applier) resolve(ctx context.Context, xid string) (format.Decision, error) {
	return Resolve(ctx, a.conn, "pg:"+xid)
}

// Resolve answers whether the PostgreSQL transaction named by a frame's
// tx id ("pg:<xid>") committed (SPEC.md, "In-doubt transactions"): the
// writer's resolver.
func Resolve(ctx context.Context, conn *pgx.Conn, id string) (format.Decision, error) {
	xid, ok := strings.CutPrefix(id, "pg:")
	if !ok {
		return format.DecisionUnknown, fmt.Errorf("writeback: transaction id %q was not written by this applier", id)
	}
	var status *string
	if err := conn.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&status); err != nil {
		return format.DecisionUnknown, err
	}
	switch deref(status) {
	case "committed":
		return format.DecisionCommitted, nil
	case "aborted":
		return format.DecisionAborted, nil
	}
	return format.DecisionUnknown, nil
}

func opOf(op string) format.Op {
	switch op {
	case command.OpInsert:
		return format.OpInsert
	case command.OpDelete:
		return format.OpDelete
	case command.OpUpsert:
		return format.OpUpsert
	}
	return format.OpUpdate
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Write is the legacy's own write of a row (no command): an upsert with a
// new version, appended with the order contract like any other.
func (a *Applier) Write(ctx context.Context, table, key string, value []byte) (uint64, error) {
	if !a.tables[table] {
		return 0, fmt.Errorf("writeback: table %q is not one of the applier's", table)
	}
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var xid string
	var version int64
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
		return 0, err
	}
	err = tx.QueryRow(ctx, `INSERT INTO `+table+` (key, value, version) VALUES ($1, $2::jsonb, nextval('`+VersionSequence+`'))
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version RETURNING version`, key, string(value)).Scan(&version)
	if err != nil {
		return 0, fmt.Errorf("writeback: writing %s/%s: %w", table, key, err)
	}
	ftx := format.Tx{CommitTime: a.now().UnixNano(), ID: "pg:" + xid,
		Changes: []format.Change{{Table: table, Key: []byte(key), Op: format.OpUpsert, After: value, Version: uint64(version)}}}
	if a.AfterCommit {
		if err := tx.Commit(ctx); err != nil {
			return 0, err
		}
		_, err := a.w.Commit(&ftx)
		return uint64(version), err
	}
	p, err := a.w.Prepare(&ftx)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err // in doubt: the writer's resolver settles it
	}
	return uint64(version), p.Commit()
}
