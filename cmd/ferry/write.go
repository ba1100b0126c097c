package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
)

const writeUsage = `Usage: ferry write --dir DIR [--source NAME] [--sync none|interval|always] [--max-segment-size SIZE]

Appends changes read from stdin, one JSON object per line, to the change files
of SOURCE in DIR, as transactions:

  {"table":"orders","op":"upsert","key":"42","after":{"total":9.5},"tx":"t1"}

  table        table name (required)
  op           insert, update, upsert or delete (required)
  key          the row's key (required): a JSON string, or a JSON number kept
               exactly as written (42 is stored as the key "42")
  after        the row after the change, any JSON value (required unless
               op is delete; a delete has none)
  before       the row before the change, any JSON value (optional)
  tx           transaction id, a string or number (optional): consecutive
               lines with the same tx form one transaction; a line without
               tx is a transaction of its own
  origin       who caused the change (optional, the same on every line of a
               transaction)
  commit_time  when the legacy committed: RFC 3339 text or Unix nanoseconds
               (optional, default now; the same on every line of a transaction)

Images are stored as JSON (content type json). Blank lines are skipped. A bad
line stops the command with an error naming the line: nothing of its
transaction is written, every transaction before it is. A summary goes to
stderr. Exit status: 0 success, 1 error, 2 usage.

Flags:
`

// writeFlags are the flags of ferry write.
type writeFlags struct {
	dir, source string
	sync        string
	maxSize     string
	maxAge      time.Duration
}

func runWrite(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry write", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var f writeFlags
	fs.StringVar(&f.dir, "dir", "", "directory of the change files (created if missing)")
	fs.StringVar(&f.source, "source", "legacy", "source name: 1-64 of [A-Za-z0-9_-]")
	fs.StringVar(&f.sync, "sync", "interval", "when to fsync: none, interval (every 100ms) or always (every transaction); the segment is sealed and synced at the end in any case")
	fs.StringVar(&f.maxSize, "max-segment-size", "64MiB", "rotate to a new segment at this size (bytes, or with KiB, MiB, GiB)")
	fs.DurationVar(&f.maxAge, "max-segment-age", format.DefaultMaxSegmentAge, "rotate to a new segment at this age (0: never)")
	fs.String("config", "", "YAML config file (keys named like the flags; or FERRY_CONFIG)")
	fs.Usage = func() {
		fmt.Fprint(env.Stderr, writeUsage)
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	usageErr := func(format string, args ...any) error {
		return &exitError{code: 2, err: fmt.Errorf("ferry write: "+format+" (see ferry write -h)", args...)}
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q: changes are read from stdin", fs.Arg(0))
	case f.dir == "":
		return usageErr("--dir is required")
	case !format.ValidSource(f.source):
		return usageErr("--source %q: want 1-%d of [A-Za-z0-9_-]", f.source, format.MaxSourceLen)
	}
	policy, err := format.ParseSyncPolicy(f.sync)
	if err != nil {
		return usageErr("--sync: %v", err)
	}
	maxSize, err := parseSize(f.maxSize)
	if err != nil {
		return usageErr("--max-segment-size: %v", err)
	}
	w, err := format.OpenWriter(f.dir, f.source, format.WithSync(policy, 0),
		format.WithMaxSegmentSize(maxSize), format.WithMaxSegmentAge(f.maxAge))
	if err != nil {
		return fmt.Errorf("ferry write: %w", err)
	}
	sum, werr := writeLines(ctx, env.Stdin, w)
	cerr := w.Close()
	if werr == nil && cerr != nil {
		werr = fmt.Errorf("ferry write: closing the segment: %w", cerr)
	}
	fmt.Fprintf(env.Stderr, "ferry write: %d transactions, %d changes written to %s (%s)\n",
		sum.txs, sum.changes, f.dir, sum.segments(f.source))
	return werr
}

// writeSummary counts what ferry write committed.
type writeSummary struct {
	txs, changes int
	first, last  format.Position
}

func (s *writeSummary) segments(source string) string {
	switch {
	case s.txs == 0:
		return "no segment written"
	case s.first.Segment == s.last.Segment:
		return "segment " + format.SegmentName(source, s.first.Segment)
	}
	return fmt.Sprintf("segments %s to %s", format.SegmentName(source, s.first.Segment), format.SegmentName(source, s.last.Segment))
}

// writeLine is one JSON line of ferry write's input.
type writeLine struct {
	Table      *string         `json:"table"`
	Op         *string         `json:"op"`
	Key        json.RawMessage `json:"key"`
	After      json.RawMessage `json:"after"`
	Before     json.RawMessage `json:"before"`
	Tx         json.RawMessage `json:"tx"`
	Origin     *string         `json:"origin"`
	CommitTime json.RawMessage `json:"commit_time"`
}

// pendingTx is a transaction being collected from consecutive lines.
type pendingTx struct {
	tx        format.Tx
	id        string // the tx field as given; "" for a line without one
	grouped   bool   // lines with this id are grouped
	firstLine int
	lastLine  int
	timeSet   bool
	originSet bool
}

// writeLines reads JSON lines from in and commits their transactions to w.
// It stops at the first bad line, having committed every transaction before
// that line's transaction and nothing of it.
func writeLines(ctx context.Context, in io.Reader, w *format.Writer) (writeSummary, error) {
	var sum writeSummary
	stop := interruptReads(ctx, in)
	defer stop()
	br := bufio.NewReaderSize(in, 1<<20)
	var cur *pendingTx
	flush := func() error {
		if cur == nil {
			return nil
		}
		tx := &cur.tx
		if !cur.timeSet {
			tx.CommitTime = time.Now().UnixNano()
		}
		pos, err := w.Commit(tx)
		if errors.Is(err, format.ErrInvalid) || errors.Is(err, format.ErrTooLarge) {
			return fmt.Errorf("ferry write: %s (lines %d-%d): %w; nothing of it was written", cur.describe(), cur.firstLine, cur.lastLine, err)
		}
		if err != nil {
			return fmt.Errorf("ferry write: %s (lines %d-%d): %w", cur.describe(), cur.firstLine, cur.lastLine, err)
		}
		if sum.txs == 0 {
			sum.first = pos
		}
		sum.last = pos
		sum.txs++
		sum.changes += len(tx.Changes)
		cur = nil
		return nil
	}
	var line []byte
	for n := 1; ; n++ {
		var err error
		line, err = readLine(br, line[:0])
		if err != nil && !(err == io.EOF && len(line) > 0) {
			if err == io.EOF {
				return sum, flush()
			}
			if ctx.Err() != nil {
				return sum, fmt.Errorf("ferry write: interrupted at line %d; %d transactions written, the one being read (if any) was not", n, sum.txs)
			}
			return sum, fmt.Errorf("ferry write: reading stdin at line %d: %w", n, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var l writeLine
		change, id, hasID, err := parseWriteLine(line, &l)
		sameTx := cur != nil && hasID && cur.grouped && cur.id == id
		if err == nil {
			err = format.ValidateTx(&format.Tx{ID: id, Origin: deref(l.Origin), Changes: []format.Change{change}})
		}
		if err == nil && sameTx {
			err = cur.add(change, &l)
		}
		if errors.Is(err, errNoTx) && cur != nil {
			// Which transaction the line belongs to cannot be told: refuse
			// the one being collected too rather than risk splitting it.
			return sum, fmt.Errorf("ferry write: line %d: %w; nothing of it nor of %s (from line %d) was written: fix the line and write them again",
				n, err, cur.describe(), cur.firstLine)
		}
		if err != nil {
			if sameTx {
				return sum, fmt.Errorf("ferry write: line %d: %w; nothing of transaction %q (from line %d) was written: fix the line and write that transaction again",
					n, err, id, cur.firstLine)
			}
			// The bad line starts a transaction: the one before it is whole.
			if ferr := flush(); ferr != nil {
				return sum, ferr
			}
			return sum, fmt.Errorf("ferry write: line %d: %w; nothing of its transaction was written: fix the line and write it again", n, err)
		}
		if !sameTx {
			if err := flush(); err != nil {
				return sum, err
			}
			cur = &pendingTx{id: id, grouped: hasID, firstLine: n}
			cur.tx.ID = id
			if err := cur.add(change, &l); err != nil {
				return sum, fmt.Errorf("ferry write: line %d: %w; nothing of its transaction was written: fix the line and write it again", n, err)
			}
		}
		cur.lastLine = n
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (p *pendingTx) describe() string {
	if p.grouped {
		return fmt.Sprintf("transaction %q", p.id)
	}
	return "the transaction"
}

// add appends a change to the transaction, checking that origin and commit
// time agree with its earlier lines.
func (p *pendingTx) add(c format.Change, l *writeLine) error {
	if l.Origin != nil {
		if p.originSet && *l.Origin != p.tx.Origin {
			return fmt.Errorf("origin %q differs from %q on the transaction's earlier lines", *l.Origin, p.tx.Origin)
		}
		if !p.originSet && len(p.tx.Changes) > 0 && *l.Origin != "" {
			return fmt.Errorf("origin %q on a later line of a transaction whose first line has none", *l.Origin)
		}
		p.tx.Origin, p.originSet = *l.Origin, true
	}
	if len(l.CommitTime) > 0 && string(l.CommitTime) != "null" {
		t, err := parseCommitTime(l.CommitTime)
		if err != nil {
			return err
		}
		if p.timeSet && t != p.tx.CommitTime {
			return fmt.Errorf("commit_time %s differs from the transaction's earlier lines", l.CommitTime)
		}
		p.tx.CommitTime, p.timeSet = t, true
	}
	p.tx.Changes = append(p.tx.Changes, c)
	return nil
}

// parseWriteLine decodes one line into a change and its tx id.
func parseWriteLine(line []byte, l *writeLine) (c format.Change, id string, hasID bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(l); err != nil {
		// Still find the line's transaction if the JSON allows it, so that
		// the error refuses the right one.
		var txOnly struct{ Tx json.RawMessage }
		if json.Unmarshal(line, &txOnly) == nil {
			if len(txOnly.Tx) > 0 && string(txOnly.Tx) != "null" {
				id, terr := scalarText(txOnly.Tx)
				return c, id, terr == nil, fmt.Errorf("not a JSON object of a change: %v", err)
			}
			return c, "", false, fmt.Errorf("not a JSON object of a change: %v", err)
		}
		return c, "", false, fmt.Errorf("%w: %v", errNoTx, err)
	}
	if dec.More() {
		return c, "", false, errors.New("more than one JSON value on the line")
	}
	if len(l.Tx) > 0 && string(l.Tx) != "null" {
		if id, err = scalarText(l.Tx); err != nil {
			return c, "", false, fmt.Errorf("tx: %v", err)
		}
		hasID = true
	}
	if l.Table == nil || *l.Table == "" {
		return c, id, hasID, errors.New(`missing "table"`)
	}
	c.Table = *l.Table
	if l.Op == nil {
		return c, id, hasID, errors.New(`missing "op" (insert, update, upsert or delete)`)
	}
	if c.Op, err = format.ParseOp(*l.Op); err != nil {
		return c, id, hasID, err
	}
	if len(l.Key) == 0 || string(l.Key) == "null" {
		return c, id, hasID, errors.New(`missing "key"`)
	}
	key, err := scalarText(l.Key)
	if err != nil {
		return c, id, hasID, fmt.Errorf("key: %v", err)
	}
	if key == "" {
		return c, id, hasID, errors.New("empty key")
	}
	c.Key = []byte(key)
	c.Content = format.ContentJSON
	hasAfter := len(l.After) > 0 && string(l.After) != "null"
	switch {
	case c.Op == format.OpDelete && hasAfter:
		return c, id, hasID, errors.New(`a delete has no "after" image (put the deleted row in "before")`)
	case c.Op != format.OpDelete && !hasAfter:
		return c, id, hasID, fmt.Errorf(`missing "after": an %s needs the row after the change`, c.Op)
	}
	if hasAfter {
		c.After = compactJSON(l.After)
	}
	if len(l.Before) > 0 && string(l.Before) != "null" {
		c.Before = compactJSON(l.Before)
	}
	return c, id, hasID, nil
}

// errNoTx marks a line too malformed to tell its transaction.
var errNoTx = errors.New("not JSON")

// scalarText returns a JSON string's text or a JSON number's literal.
func scalarText(raw json.RawMessage) (string, error) {
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw), nil
	}
	return "", fmt.Errorf("want a string or a number, got %s", raw)
}

func compactJSON(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return append([]byte(nil), raw...) // already validated by the decoder
	}
	return b.Bytes()
}

func parseCommitTime(raw json.RawMessage) (int64, error) {
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, fmt.Errorf("commit_time %q: want RFC 3339 like 2026-01-02T15:04:05.123Z or Unix nanoseconds", s)
		}
		return t.UnixNano(), nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("commit_time %s: want RFC 3339 text or an integer of Unix nanoseconds", raw)
	}
	return v, nil
}

// readLine appends the next line of br (without its newline) to buf.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if n := len(buf); n > 0 && buf[n-1] == '\n' {
			buf = buf[:n-1]
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
		}
		return buf, err
	}
}

// interruptReads makes a blocked read of in return once ctx is done, when in
// supports read deadlines (pipes and most terminals do). The returned stop
// ends the watcher and waits for it.
func interruptReads(ctx context.Context, in io.Reader) (stop func()) {
	d, ok := in.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			_ = d.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	return func() { close(done); <-exited }
}

// parseSize parses a byte size: a number with an optional KiB, MiB or GiB
// (or K, M, G, KB, MB, GB, all powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (want e.g. 65536, 512KiB, 64MiB)", s)
	}
	return n * mult, nil
}
