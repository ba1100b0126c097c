// Package jsonl reads row changes written as JSON lines, one change per
// line, and commits them as transactions: the input of `ferry write`, for
// a legacy that can print JSON but not write the binary format (see the
// package doc of format for the Go writer, and SPEC.md for other
// languages).
//
// A line is one JSON object:
//
//	{"table":"orders","op":"upsert","key":"42","after":{"total":9.5},"tx":"t1","version":3}
//
//	table        table name (required)
//	op           insert, update, upsert or delete (required)
//	key          the row's key (required): a JSON string, or a JSON number
//	             kept exactly as written (42 is stored as the key "42")
//	after        the row after the change, any JSON value (required unless
//	             op is delete; a delete has none)
//	before       the row before the change, any JSON value (optional)
//	version      the row's version after the change, an integer from 1
//	             (optional; format.Change.Version, SPEC.md "Row versions")
//	tx           transaction id, a string or number (optional): consecutive
//	             lines with the same tx form one transaction; a line without
//	             tx is a transaction of its own
//	origin       who caused the change (optional, the same on every line of
//	             a transaction)
//	commit_time  when the legacy committed: RFC 3339 text or Unix
//	             nanoseconds (optional, default now; the same on every line
//	             of a transaction)
//
// Images are stored as JSON (content type json). Blank lines are skipped.
// A bad line stops Copy with an error naming the line: nothing of its
// transaction is committed, every transaction before it is.
package jsonl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
)

// Committer commits one transaction; *format.Writer is one.
type Committer interface {
	Commit(tx *format.Tx) (format.Position, error)
}

var _ Committer = (*format.Writer)(nil)

// Summary counts what Copy committed: transactions, changes, and the
// positions of the first and the last transaction.
type Summary struct {
	Txs, Changes int
	First, Last  format.Position
}

// Segments names the segments the committed transactions are in.
func (s *Summary) Segments(source string) string {
	switch {
	case s.Txs == 0:
		return "no segment written"
	case s.First.Segment == s.Last.Segment:
		return "segment " + format.SegmentName(source, s.First.Segment)
	}
	return fmt.Sprintf("segments %s to %s", format.SegmentName(source, s.First.Segment), format.SegmentName(source, s.Last.Segment))
}

// line is one JSON line of the input.
type line struct {
	Table      *string         `json:"table"`
	Op         *string         `json:"op"`
	Key        json.RawMessage `json:"key"`
	After      json.RawMessage `json:"after"`
	Before     json.RawMessage `json:"before"`
	Tx         json.RawMessage `json:"tx"`
	Origin     *string         `json:"origin"`
	CommitTime json.RawMessage `json:"commit_time"`
	Version    json.RawMessage `json:"version"`
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

// Copy reads JSON lines from in and commits their transactions to w. It
// stops at the first bad line, having committed every transaction before
// that line's transaction and nothing of it. A blocked read of in returns
// when ctx ends if in supports read deadlines (pipes and most terminals).
func Copy(ctx context.Context, in io.Reader, w Committer) (Summary, error) {
	var sum Summary
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
			return fmt.Errorf("%s (lines %d-%d): %w; nothing of it was written", cur.describe(), cur.firstLine, cur.lastLine, err)
		}
		if err != nil {
			return fmt.Errorf("%s (lines %d-%d): %w", cur.describe(), cur.firstLine, cur.lastLine, err)
		}
		if sum.Txs == 0 {
			sum.First = pos
		}
		sum.Last = pos
		sum.Txs++
		sum.Changes += len(tx.Changes)
		cur = nil
		return nil
	}
	var buf []byte
	for n := 1; ; n++ {
		var err error
		buf, err = readLine(br, buf[:0])
		if err != nil && !(err == io.EOF && len(buf) > 0) {
			if err == io.EOF {
				return sum, flush()
			}
			if ctx.Err() != nil {
				return sum, fmt.Errorf("interrupted at line %d; %d transactions written, the one being read (if any) was not", n, sum.Txs)
			}
			return sum, fmt.Errorf("reading the input at line %d: %w", n, err)
		}
		if len(bytes.TrimSpace(buf)) == 0 {
			continue
		}
		var l line
		change, id, hasID, err := parseLine(buf, &l)
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
			return sum, fmt.Errorf("line %d: %w; nothing of it nor of %s (from line %d) was written: fix the line and write them again",
				n, err, cur.describe(), cur.firstLine)
		}
		if err != nil {
			if sameTx {
				return sum, fmt.Errorf("line %d: %w; nothing of transaction %q (from line %d) was written: fix the line and write that transaction again",
					n, err, id, cur.firstLine)
			}
			// The bad line starts a transaction: the one before it is whole.
			if ferr := flush(); ferr != nil {
				return sum, ferr
			}
			return sum, fmt.Errorf("line %d: %w; nothing of its transaction was written: fix the line and write it again", n, err)
		}
		if !sameTx {
			if err := flush(); err != nil {
				return sum, err
			}
			cur = &pendingTx{id: id, grouped: hasID, firstLine: n}
			cur.tx.ID = id
			if err := cur.add(change, &l); err != nil {
				return sum, fmt.Errorf("line %d: %w; nothing of its transaction was written: fix the line and write it again", n, err)
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
func (p *pendingTx) add(c format.Change, l *line) error {
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

// parseLine decodes one line into a change and its tx id.
func parseLine(text []byte, l *line) (c format.Change, id string, hasID bool, err error) {
	if t := bytes.TrimSpace(text); len(t) > 0 && t[0] != '{' && json.Valid(t) {
		// Valid JSON of another kind: say which, not the decoder's Go
		// type. The line's transaction cannot be told.
		return c, "", false, notObjectError(fmt.Sprintf(`a line must be a JSON object of one change, like {"table":"t","op":"upsert","key":"1","after":{}}; this one is a JSON %s`, jsonKind(t[0])))
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(l); err != nil {
		// Still find the line's transaction if the JSON allows it, so that
		// the error refuses the right one.
		var txOnly struct{ Tx json.RawMessage }
		if json.Unmarshal(text, &txOnly) == nil {
			if len(txOnly.Tx) > 0 && string(txOnly.Tx) != "null" {
				id, terr := scalarText(txOnly.Tx)
				return c, id, terr == nil, describeDecodeError(err)
			}
			return c, "", false, describeDecodeError(err)
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
	if len(l.Version) > 0 && string(l.Version) != "null" {
		v, err := strconv.ParseUint(string(l.Version), 10, 64)
		if err != nil || v == 0 {
			return c, id, hasID, fmt.Errorf("version %s: want the row's version, an integer from 1 to %d (leave it out for none)", l.Version, uint64(1<<64-1))
		}
		c.Version = v
	}
	return c, id, hasID, nil
}

// errNoTx marks a line too malformed to tell its transaction.
var errNoTx = errors.New("not JSON")

// notObjectError is a line of JSON that is not an object: its transaction
// cannot be told either (it is errNoTx).
type notObjectError string

func (e notObjectError) Error() string        { return string(e) }
func (e notObjectError) Is(target error) bool { return target == errNoTx }

// jsonKind names the kind of JSON value that starts with b.
func jsonKind(b byte) string {
	switch b {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// describeDecodeError says what is wrong with a line in the input's terms
// (field names and JSON kinds), not in the decoder's Go types.
func describeDecodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := "string"
		switch te.Field {
		case "":
			return fmt.Errorf("a line must be a JSON object of one change; this one is a JSON %s", te.Value)
		case "key", "tx":
			want = "string or number"
		case "after", "before", "commit_time", "version":
			want = "JSON value" // RawMessage fields take anything
		}
		return fmt.Errorf("%q is a JSON %s, want a %s", te.Field, te.Value, want)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		return fmt.Errorf("unknown field %s (the fields are table, op, key, after, before, version, tx, origin, commit_time)", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return fmt.Errorf("not a JSON object of a change: %v", err)
}

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
