// Package load is the initial-load reader and publisher behind `ferry load`:
// it reads a legacy table — from PostgreSQL, or from a JSON lines or CSV
// dump — in key-ordered chunks and publishes them into the change stream as
// the load messages of package format/load (format/SPEC.md, "Initial
// load"), so that receivers start from the rows the legacy already holds
// while its live changes keep flowing.
//
// What it promises:
//   - Key and image of a row are rendered as the legacy's change files
//     render them (key columns' text joined by Table.KeySep, a JSON object of
//     every column), so a loaded row and a live change of it land on the
//     same receiver key.
//   - Chunks are bounded by a fixed upper bound read at start (a growing
//     table cannot make the load endless) and read with one statement each
//     (one snapshot); each carries its low watermark, the stream's last
//     sequence read before that snapshot.
//   - Memory does not depend on the table's size: rows stream into messages
//     of at most Config.MessageBytes raw, a bounded number in flight (dumps
//     hold one chunk's compressed messages until the chunk is valid).
//   - A chunk's last part is published only once every earlier part is
//     acknowledged, the next chunk only once it is: a stored last part means
//     a stored chunk. A rerun with the same arguments resumes after the last
//     stored chunk, from what the stream holds (no state file).
//   - Publish failures (NATS down, a server restart) are retried from the
//     last acknowledged chunk with new chunk numbers, until the context
//     ends; a source error (a malformed dump line, a PostgreSQL error) ends
//     the load with a failed message saying why and where a rerun resumes.
//
// It does not promise anything about receivers: they apply the messages by
// the rule of SPEC.md section 24.2.
package load

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/format"
	fload "github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultChunkRows    = 50_000
	DefaultMessageBytes = 1 << 20
	DefaultInFlight     = 16
	// maxHeldBytes bounds the raw bytes of one dump chunk, held until the
	// chunk is read whole: a chunk ends early there.
	maxHeldBytes = 32 << 20
)

// Table says what to load.
type Table struct {
	// Name is the table: for PostgreSQL its name, optionally
	// schema-qualified ("public.orders"); it is also the table name the rows
	// carry, which must be the change files' name for it.
	Name string
	// Key lists the key columns in key order; empty means the primary key
	// (PostgreSQL). Dumps need it.
	Key []string
	// VersionColumn names the row version column (format/SPEC.md, "Row
	// versions"), "" if the table has none.
	VersionColumn string
	// From and To restrict the load to keys in [From, To] (column texts, one
	// per key column), nil for unbounded. PostgreSQL only.
	From, To []string
	// KeySep joins the key columns into the change files' key. Default "/".
	KeySep string
}

// Input says where the rows come from: exactly one of its fields.
type Input struct {
	// PG is a PostgreSQL connection URL.
	PG string
	// JSONL and CSV are dump files.
	JSONL, CSV string
}

func (in Input) kind() string {
	switch {
	case in.PG != "":
		return "postgresql"
	case in.JSONL != "":
		return "jsonl"
	case in.CSV != "":
		return "csv"
	}
	return ""
}

// Config configures a load.
type Config struct {
	// Prefix is the subject prefix. Default wire.DefaultSubjectPrefix.
	Prefix string
	// ChunkRows is the most rows per chunk. Default DefaultChunkRows.
	ChunkRows int
	// MessageBytes bounds a message's raw body. Default DefaultMessageBytes,
	// and never more than the server's max payload allows.
	MessageBytes int
	// Codec compresses chunk bodies. Default zstd.
	Codec    wire.Codec
	codecSet bool
	// LoadID names the load; empty derives it from the table and the
	// arguments (so that a rerun with the same ones resumes).
	LoadID string
	// Reload starts a new load even if the last one with the same
	// arguments is done (or unfinished).
	Reload bool
	// Mark (dumps) is the stream sequence from `ferry load mark` taken
	// before the dump; HasMark says it is set.
	Mark    uint64
	HasMark bool
	// Numeric (CSV) names the columns whose fields are numbers in the image
	// (the others are strings).
	Numeric []string
	// InFlight bounds the messages published and not yet acknowledged.
	// Default DefaultInFlight.
	InFlight int
	// Log receives warnings and retries. Default: discard.
	Log *slog.Logger
	// Progress, if set, is called after every acknowledged chunk and at
	// the end.
	Progress func(Progress)
	// RetryWait is the longest wait between retries. Default 5 s.
	RetryWait time.Duration
	// AssumedRate (rows/s) sizes the retention check's estimate of the
	// load's duration. Default 100,000.
	AssumedRate float64
}

// WithCodec returns cfg with its codec set (the zero Codec is "none").
func (cfg Config) WithCodec(c wire.Codec) Config { cfg.Codec, cfg.codecSet = c, true; return cfg }

func (cfg *Config) defaults() {
	if cfg.Prefix == "" {
		cfg.Prefix = wire.DefaultSubjectPrefix
	}
	if cfg.ChunkRows <= 0 {
		cfg.ChunkRows = DefaultChunkRows
	}
	if cfg.MessageBytes <= 0 {
		cfg.MessageBytes = DefaultMessageBytes
	}
	if !cfg.codecSet {
		cfg.Codec = wire.CodecZstd
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = DefaultInFlight
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 5 * time.Second
	}
	if cfg.AssumedRate <= 0 {
		cfg.AssumedRate = 100_000
	}
}

// Progress is a load's progress.
type Progress struct {
	Table, Load string
	// Rows sent so far (by earlier runs of a resumed load too), of
	// Estimate (-1: unknown).
	Rows, Estimate int64
	Chunks         uint64
	// Rate is this run's rows per second; ETA the estimated time left (0 if
	// unknown).
	Rate    float64
	ETA     time.Duration
	Elapsed time.Duration
	Done    bool
}

// Result says what a load did.
type Result struct {
	Table, Load string
	// Rows and Messages sent by this run; Total by the whole load.
	Rows, Messages, Total int64
	Chunks                uint64
	// Resumed: this run continued an unfinished load. AlreadyDone: the
	// load was complete, nothing was sent.
	Resumed, AlreadyDone bool
	Elapsed              time.Duration
	// Warnings from the retention check.
	Warnings []string
}

// Errors.
var (
	// ErrInput means arguments the load cannot run with.
	ErrInput = errors.New("load: invalid input")
	// ErrDump means a malformed dump (the error names file and line).
	ErrDump = errors.New("load: malformed dump")
)

// row is one row as a source renders it; its buffers are reused.
type row struct {
	key, image []byte
	version    uint64
	// tuple is the row's key tuple (dumps: its record number).
	tuple fload.Key
}

// plan is what a source decided at start.
type plan struct {
	input         string
	keyColumns    []string
	versionColumn string
	from, to      fload.Key
	upper         fload.Key
	estimate      int64
}

// source reads rows in chunks.
type source interface {
	plan(ctx context.Context) (plan, error)
	// chunk reads up to n rows after lo (nil: from the start) up to upper
	// (nil: no bound), calling emit for each; it returns how many it read
	// (fewer than n: the range is exhausted).
	chunk(ctx context.Context, lo, upper fload.Key, n int, emit func(r *row) error) (int, error)
	close()
}

// Run loads table t from in into the stream. It resumes an unfinished load
// with the same arguments; see the package comment for what it promises.
func Run(ctx context.Context, st Stream, in Input, t Table, cfg Config) (Result, error) {
	cfg.defaults()
	if t.KeySep == "" {
		t.KeySep = "/"
	}
	if t.Name == "" {
		return Result{}, fmt.Errorf("%w: no table (--table)", ErrInput)
	}
	if cfg.LoadID != "" && !fload.ValidID(cfg.LoadID) {
		return Result{}, fmt.Errorf("%w: load id %q: want 1-%d of [A-Za-z0-9_.:-], first a letter or digit", ErrInput, cfg.LoadID, fload.MaxIDLen)
	}
	var src source
	var err error
	switch n := btoi(in.PG != "") + btoi(in.JSONL != "") + btoi(in.CSV != ""); {
	case n != 1:
		return Result{}, fmt.Errorf("%w: give exactly one of --pg, --jsonl and --csv", ErrInput)
	case in.PG != "":
		if cfg.HasMark {
			return Result{}, fmt.Errorf("%w: --mark is for dumps; a PostgreSQL load reads its low watermarks itself", ErrInput)
		}
		src, err = openPG(ctx, in.PG, t)
	default:
		if t.From != nil || t.To != nil {
			return Result{}, fmt.Errorf("%w: --from/--to are for PostgreSQL; cut the dump instead", ErrInput)
		}
		if !cfg.HasMark && t.VersionColumn == "" {
			return Result{}, fmt.Errorf("%w: a dump needs --mark N (run `ferry load mark` before taking the dump, and pass what it printed) or row versions (--version-column), else changes made while it was taken could be overwritten by its older rows", ErrInput)
		}
		path, csv := in.JSONL, false
		if in.CSV != "" {
			path, csv = in.CSV, true
		}
		src, err = openDump(path, csv, t, cfg.Numeric)
	}
	if err != nil {
		return Result{}, err
	}
	defer src.close()
	l := &loader{st: st, src: src, t: t, cfg: cfg, in: in, subject: fload.Subject(cfg.Prefix, t.Name)}
	return l.run(ctx)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

type loader struct {
	st      Stream
	src     source
	t       Table
	cfg     Config
	in      Input
	subject string
	plan    plan
	id      string
	// lastID is the id of the last message this loader knows stored (its
	// begin, or a chunk's acknowledged last part); epoch the connection's
	// when it was.
	lastID string
	epoch  uint64
	// suspects are the ids of messages published as the connection's
	// epoch moved: they may have reached a restarted server after the
	// acknowledged messages it lost, so recheck looks under them.
	suspects map[string]bool
	maxRaw   int
	dump     bool

	// Where the load stands: the next chunk starts after lo (nil: at the
	// range's start) with a number >= next; total rows sent so far.
	lo     fload.Key
	next   uint64
	total  int64
	chunks uint64 // chunks acknowledged by this run

	pool      sync.Pool     // raw frame buffers
	maxChunk  atomic.Uint64 // highest chunk number a producer used, +1
	rows      atomic.Int64  // rows acknowledged by this run
	messages  atomic.Int64
	start     time.Time
	baseTotal int64
}

// digest identifies the load's arguments: a rerun with the same ones
// resumes the same load.
func (l *loader) digest() string {
	h := sha256.New()
	for _, s := range []string{l.plan.input, l.t.Name, strings.Join(l.plan.keyColumns, ","), l.t.KeySep, l.t.VersionColumn,
		strings.Join(l.t.From, "\x00"), strings.Join(l.t.To, "\x00"), fmt.Sprint(l.cfg.HasMark, l.cfg.Mark), l.in.JSONL, l.in.CSV,
		strings.Join(l.cfg.Numeric, ",")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:8]
}

// newID returns a fresh load id: table, digest, start time.
func (l *loader) newID() string {
	name := []byte(l.t.Name)
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			name[i] = '_'
		}
	}
	if len(name) > 64 {
		name = name[:64]
	}
	if len(name) == 0 || name[0] == '_' {
		name = append([]byte("t"), name...)
	}
	return string(name) + "-" + l.digest() + "-" + strconv.FormatInt(time.Now().UnixMilli(), 36)
}

// ours reports whether load id belongs to a load with our arguments.
func (l *loader) ours(id string) bool {
	if l.cfg.LoadID != "" {
		return id == l.cfg.LoadID
	}
	parts := strings.Split(id, "-")
	return len(parts) >= 3 && parts[len(parts)-2] == l.digest()
}

func (l *loader) run(ctx context.Context) (Result, error) {
	l.start = time.Now()
	var err error
	if l.plan, err = l.src.plan(ctx); err != nil {
		return Result{}, err
	}
	_, l.dump = l.src.(*dumpSource)
	l.maxRaw = l.cfg.MessageBytes
	// Room for headers and a body that does not compress.
	if mp := l.st.MaxPayload() - 64<<10; mp > 0 && mp < l.maxRaw {
		l.maxRaw = mp
	}
	if l.maxRaw > fload.MaxRawLen {
		l.maxRaw = fload.MaxRawLen
	}
	res := Result{Table: l.t.Name}
	done, err := l.resume(ctx, &res)
	if err != nil || done {
		return res, err
	}
	res.Load = l.id
	var info *jetstream.StreamInfo
	if err := l.retry(ctx, "reading the stream's state", func() (err error) {
		info, err = l.st.Info(ctx)
		return err
	}); err != nil {
		return res, err
	}
	res.Warnings = CheckRetention(info, l.plan.estimate, l.cfg.AssumedRate, time.Now())
	for _, w := range res.Warnings {
		l.cfg.Log.Warn(w, "table", l.t.Name, "load", l.id)
	}
	if !res.Resumed {
		if err := l.publishBegin(ctx); err != nil {
			return res, err
		}
	}
	l.baseTotal = l.total
	if l.plan.upper != nil || l.dump {
		err = l.loop(ctx)
	}
	res.Rows, res.Messages, res.Chunks, res.Total = l.rows.Load(), l.messages.Load(), l.chunks, l.total
	res.Elapsed = time.Since(l.start)
	if err != nil {
		var fe *fatalError
		if errors.As(err, &fe) {
			l.publishFailed(ctx, fe.err)
			return res, fe.err
		}
		return res, err
	}
	if err := l.publishEnd(ctx, &fload.Header{Kind: fload.KindDone, Rows: l.total, Chunks: l.next}, nil); err != nil {
		return res, err
	}
	l.report(true)
	return res, nil
}

// resume looks at the last message on the table's subject and decides
// whether this run continues a load, starts one, or has nothing to do.
func (l *loader) resume(ctx context.Context, res *Result) (bool, error) {
	var m *jetstream.RawStreamMsg
	if err := l.retry(ctx, "reading the last message of "+l.subject, func() (err error) {
		m, err = l.st.LastMsg(ctx, l.subject)
		return err
	}); err != nil {
		return false, err
	}
	if m != nil && !l.cfg.Reload {
		h, err := fload.ParseHeader(m.Header)
		switch {
		case err != nil:
			l.cfg.Log.Warn("the last message on the load subject is not a load message; starting a new load", "subject", l.subject, "seq", m.Sequence, "err", err)
		case !l.ours(h.Load):
			l.cfg.Log.Info("the last load of this table had other arguments; starting a new load", "table", l.t.Name, "last_load", h.Load)
		case h.Kind == fload.KindDone:
			res.Load, res.AlreadyDone, res.Total = h.Load, true, h.Rows
			l.cfg.Log.Info("load already done; pass --reload to send the table again", "table", l.t.Name, "load", h.Load, "rows", h.Rows)
			return true, nil
		default:
			l.id, res.Resumed = h.Load, true
			if err := l.continueFrom(&h, m); err != nil {
				return false, err
			}
			l.cfg.Log.Info("resuming load", "table", l.t.Name, "load", l.id, "after", l.lo.Strings(), "chunk", l.next, "rows_so_far", l.total)
			return false, nil
		}
	}
	l.id = l.cfg.LoadID
	if l.id == "" {
		l.id = l.newID()
	}
	return false, nil
}

// continueFrom sets where the load continues from its last stored message
// (SPEC.md, section 24.3).
func (l *loader) continueFrom(h *fload.Header, m *jetstream.RawStreamMsg) error {
	l.lastID = h.MsgID()
	switch h.Kind {
	case fload.KindBegin:
		b, err := fload.DecodeBegin(h, m.Data)
		if err != nil {
			return err
		}
		l.plan.upper, l.lo, l.total = nil, nil, 0
		if b.Upper != nil {
			l.plan.upper = fload.KeyOf(b.Upper...)
		}
	case fload.KindChunk:
		l.plan.upper, l.next, l.total = h.Upper, max(l.next, h.Chunk+1), h.Total
		l.lo = h.Lo
		if h.Last {
			l.lo = h.Hi
		} else {
			l.lastID = "" // a chunk cut short: not what this loader acknowledged last
		}
	case fload.KindFailed:
		l.plan.upper, l.next, l.total, l.lo = h.Upper, max(l.next, h.Chunk), h.Total, h.Lo
	}
	return nil
}

// errReconnected ends an attempt when the connection was re-established:
// the server may have lost acknowledged messages, so the load continues
// from what the stream holds (recheck).
var errReconnected = errors.New("load: reconnected to NATS")

// recheck compares the stream's last message on the table's subject with
// the last one this loader had acknowledged. If they differ, the broker lost
// acknowledged messages (README.md, guarantee 6): the load continues from
// what the stream holds, sending again what it lost. It reports whether it
// moved the load back.
func (l *loader) recheck(ctx context.Context) (bool, error) {
	m, err := l.st.LastMsg(ctx, l.subject)
	if err != nil {
		return false, err
	}
	// Look under messages that may have crossed a reconnection: what the
	// stream holds of this load is what lies under them.
	for m != nil && l.suspects[m.Header.Get(fload.HdrMsgID)] {
		l.cfg.Log.Warn("the stream's last load message was published across a reconnection; looking under it",
			"table", l.t.Name, "load", l.id, "message", m.Header.Get(fload.HdrMsgID), "sequence", m.Sequence)
		if m, err = l.st.PrevMsg(ctx, l.subject, m.Sequence); err != nil {
			return false, err
		}
	}
	l.suspects = nil
	var h fload.Header
	if m != nil {
		if h, err = fload.ParseHeader(m.Header); err != nil || h.Load != l.id {
			m = nil // someone else's: nothing of this load is known stored
		}
	}
	if m != nil && h.MsgID() == l.lastID {
		return false, nil
	}
	l.cfg.Log.Error("the stream lost acknowledged load messages (a server restarted before it wrote them); sending again from what it holds",
		"table", l.t.Name, "load", l.id, "acknowledged_last", l.lastID, "hint", "set sync_interval: always and replicas 3 on the servers for broker-side durability")
	if max := l.maxChunk.Load(); max > l.next {
		l.next = max
	}
	if m == nil {
		l.lo, l.total = nil, 0
		if err := l.publishBegin(ctx); err != nil {
			return true, err
		}
		return true, nil
	}
	return true, l.continueFrom(&h, m)
}

func (l *loader) header(kind fload.Kind) fload.Header {
	return fload.Header{Load: l.id, Kind: kind, Table: l.t.Name, Time: time.Now().UnixNano()}
}

func (l *loader) msg(h *fload.Header, body []byte) *nats.Msg {
	m := nats.NewMsg(l.subject)
	for k, v := range h.Encode() {
		m.Header[k] = v
	}
	m.Data = body
	return m
}

func (l *loader) publishBegin(ctx context.Context) error {
	h := l.header(fload.KindBegin)
	h.Estimate = l.plan.estimate
	b := fload.Begin{Table: l.t.Name, Input: l.plan.input, KeyColumns: l.plan.keyColumns, VersionColumn: l.plan.versionColumn,
		From: l.t.From, To: l.t.To, Estimate: l.plan.estimate, ChunkRows: l.cfg.ChunkRows, Started: l.start.UTC()}
	if l.plan.upper != nil {
		b.Upper = l.plan.upper.Strings()
	}
	if l.cfg.HasMark {
		b.Mark = l.cfg.Mark
	}
	body, err := fload.EncodeBegin(&b)
	if err != nil {
		return err
	}
	if err := l.publishSync(ctx, l.msg(&h, body)); err != nil {
		return err
	}
	l.lastID = h.MsgID()
	return nil
}

// publishEnd publishes a done or failed message, retrying while ctx lasts.
func (l *loader) publishEnd(ctx context.Context, h *fload.Header, body []byte) error {
	hh := l.header(h.Kind)
	h.Load, h.Table, h.Time = hh.Load, hh.Table, hh.Time
	return l.publishSync(ctx, l.msg(h, body))
}

func (l *loader) publishFailed(ctx context.Context, reason error) {
	// The reason must reach receivers even when ctx ended.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	h := &fload.Header{Kind: fload.KindFailed, Chunk: l.next, Lo: l.lo, Upper: l.plan.upper, Total: l.total}
	if max := l.maxChunk.Load(); max > h.Chunk {
		h.Chunk = max
	}
	if err := l.publishEnd(fctx, h, fload.EncodeReason(reason.Error())); err != nil {
		l.cfg.Log.Error("could not publish the load's failure", "table", l.t.Name, "load", l.id, "err", err)
	}
}

func (l *loader) publishSync(ctx context.Context, m *nats.Msg) error {
	id := m.Header.Get(fload.HdrMsgID)
	if err := l.retry(ctx, "publishing "+id, func() error {
		epoch := l.st.Epoch()
		_, err := l.st.Publish(ctx, m)
		if l.st.Epoch() != epoch {
			l.suspect(id)
		}
		return err
	}); err != nil {
		return fmt.Errorf("load: %s: %w", id, err)
	}
	return nil
}

func (l *loader) suspect(id string) {
	if l.suspects == nil {
		l.suspects = make(map[string]bool)
	}
	l.suspects[id] = true
}

// retry calls the stream request fn until it succeeds or ctx ends, waiting
// up to RetryWait between attempts: a broker restarting (each request times
// out on its own, JetStream) must not fail a load that would go on after it.
func (l *loader) retry(ctx context.Context, what string, fn func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		l.cfg.Log.Warn(what+" failed; retrying", "table", l.t.Name, "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return err
		}
		wait = min(2*wait, l.cfg.RetryWait)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fatalError is a source error: the load fails.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// outMsg is a chunk message on its way to the publisher.
type outMsg struct {
	h    fload.Header
	body []byte
}

// loop runs producer and publisher attempts until the range is sent, a
// source error, or ctx ends. After a publish failure it starts again from
// the last acknowledged chunk, with chunk numbers never used before.
func (l *loader) loop(ctx context.Context) error {
	if l.maxChunk.Load() < l.next {
		l.maxChunk.Store(l.next)
	}
	wait := 100 * time.Millisecond
	for {
		l.epoch = l.st.Epoch()
		finished, err := l.attempt(ctx)
		if finished {
			// Before done: the stream must still hold what was
			// acknowledged.
			back, rerr := l.recheck(ctx)
			if rerr == nil && !back {
				return nil
			}
			err = rerr
			if err == nil {
				continue
			}
		}
		var fe *fatalError
		if errors.As(err, &fe) || ctx.Err() != nil {
			return err
		}
		l.next = max(l.next, l.maxChunk.Load())
		l.cfg.Log.Warn("load interrupted; resuming from the last acknowledged chunk", "table", l.t.Name, "load", l.id,
			"after", l.lo.Strings(), "chunk", l.next, "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return err
		}
		if _, err := l.recheck(ctx); err != nil {
			l.cfg.Log.Warn("could not read the stream's last load message; retrying", "table", l.t.Name, "err", err)
			continue
		}
		wait = min(2*wait, l.cfg.RetryWait)
	}
}

// attempt publishes chunks from l.lo until the range is exhausted
// (finished) or an error.
func (l *loader) attempt(ctx context.Context) (finished bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// producer (read, render, frame) -> compressor -> publisher: three
	// goroutines, so that reading, compressing and publishing overlap.
	raw := make(chan *outMsg, 2)
	ch := make(chan *outMsg, 2)
	prodDone, compDone := make(chan error, 1), make(chan error, 1)
	go func() {
		defer close(raw)
		prodDone <- l.produce(actx, l.lo, raw)
	}()
	go func() {
		defer close(ch)
		compDone <- l.compress(actx, raw, ch)
	}()
	pubErr := l.publish(actx, ch)
	cancel()
	for range ch { // let the producer and the compressor end
	}
	prodErr, compErr := <-prodDone, <-compDone
	switch {
	case pubErr != nil:
		return false, pubErr
	case prodErr != nil:
		return false, prodErr
	case compErr != nil:
		return false, compErr
	}
	return true, nil
}

// compress turns the raw frames of in into compressed bodies, in order.
func (l *loader) compress(ctx context.Context, in <-chan *outMsg, out chan<- *outMsg) error {
	comp, err := wire.NewCompressor(zstd.SpeedFastest)
	if err != nil {
		for range in {
		}
		return &fatalError{err}
	}
	for m := range in {
		body, err := comp.Compress(make([]byte, 0, len(m.body)/2+1024), m.body, m.h.Codec)
		if err != nil {
			for range in {
			}
			return &fatalError{err}
		}
		l.pool.Put(m.body[:0])
		m.body = body
		select {
		case out <- m:
		case <-ctx.Done():
			for range in {
			}
			return ctx.Err()
		}
	}
	return nil
}

// produce reads chunks from lo and sends their messages to out.
func (l *loader) produce(ctx context.Context, lo fload.Key, out chan<- *outMsg) error {
	b := &builder{l: l, out: out}
	for {
		chunk := l.maxChunk.Add(1) - 1
		low := l.cfg.Mark
		if !l.dump {
			// The low watermark: read before the chunk's snapshot.
			info, err := l.st.Info(ctx)
			if err != nil {
				return err
			}
			low = info.State.LastSeq
		}
		b.start(ctx, chunk, low, lo)
		n, err := l.src.chunk(ctx, lo, l.plan.upper, l.cfg.ChunkRows, b.add)
		if errors.Is(err, errChunkFull) {
			err = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &fatalError{err}
		}
		if n == 0 {
			return nil
		}
		if err := b.finish(); err != nil {
			return err
		}
		lo = cloneKey(b.last)
		if n < l.cfg.ChunkRows && !b.cut {
			return nil
		}
	}
}

func cloneKey(k fload.Key) fload.Key {
	out := make(fload.Key, len(k))
	for i, c := range k {
		out[i] = append([]byte(nil), c...)
	}
	return out
}

// errChunkFull stops a dump chunk whose held bytes reached maxHeldBytes.
var errChunkFull = errors.New("load: chunk full")

// builder cuts a chunk's rows into messages.
type builder struct {
	l   *loader
	out chan<- *outMsg
	ctx context.Context

	h       fload.Header
	tx      format.Tx
	arena   []byte
	raw     int // raw bytes of the message being built
	last    fload.Key
	held    []*outMsg // dumps: the chunk's messages, sent once it is whole
	heldRaw int
	cut     bool // the chunk ended early (held bytes)
}

func (b *builder) start(ctx context.Context, chunk, low uint64, lo fload.Key) {
	b.ctx = ctx
	b.h = fload.Header{Load: b.l.id, Kind: fload.KindChunk, Table: b.l.t.Name, Chunk: chunk, LowSeq: low,
		Codec: b.l.cfg.Codec, Time: time.Now().UnixNano(), Lo: lo, Upper: b.l.plan.upper}
	b.tx = format.Tx{CommitTime: b.h.Time, ID: b.l.id, Changes: b.tx.Changes[:0]}
	b.arena, b.raw, b.held, b.heldRaw, b.cut = b.arena[:0], fload.FrameOverhead(len(b.l.id)), b.held[:0], 0, false
}

func (b *builder) add(r *row) error {
	n := fload.RowLen(b.l.t.Name, r.key, r.image, r.version)
	if len(b.tx.Changes) > 0 && b.raw+n > b.l.maxRaw {
		if err := b.flush(false); err != nil {
			return err
		}
	}
	if fload.FrameOverhead(len(b.l.id))+n > b.l.maxRaw {
		return fmt.Errorf("load: %s key %s: a row of %d bytes does not fit in a message of %d (raise the server's max_payload)", b.l.t.Name, r.key, n, b.l.maxRaw)
	}
	k := len(b.arena)
	b.arena = append(b.arena, r.key...)
	b.arena = append(b.arena, r.image...)
	b.tx.Changes = append(b.tx.Changes, format.Change{Table: b.l.t.Name, Op: format.OpUpsert, Content: format.ContentJSON,
		Key: b.arena[k : k+len(r.key) : k+len(r.key)], After: b.arena[k+len(r.key) : len(b.arena) : len(b.arena)], Version: r.version})
	b.raw += n
	if len(b.last) != len(r.tuple) {
		b.last = make(fload.Key, len(r.tuple))
	}
	for i, c := range r.tuple {
		b.last[i] = append(b.last[i][:0], c...)
	}
	if b.l.dump && b.heldRaw+b.raw > maxHeldBytes {
		b.cut = true
		return errChunkFull
	}
	return nil
}

// flush encodes the rows gathered into one message.
func (b *builder) flush(last bool) error {
	h := b.h
	h.Last = last
	if last {
		h.Hi = cloneKey(b.last)
	}
	buf, _ := b.l.pool.Get().([]byte)
	body, err := fload.AppendRows(buf[:0], &h, &b.tx)
	if err != nil {
		return &fatalError{err}
	}
	m := &outMsg{h: h, body: body}
	b.h.Part++
	b.tx.Changes = b.tx.Changes[:0]
	b.arena = b.arena[:0]
	if b.l.dump {
		b.heldRaw += b.raw
		b.raw = fload.FrameOverhead(len(b.l.id))
		b.held = append(b.held, m)
		return nil
	}
	b.raw = fload.FrameOverhead(len(b.l.id))
	return b.send(m)
}

func (b *builder) send(m *outMsg) error {
	select {
	case b.out <- m:
		return nil
	case <-b.ctx.Done():
		return b.ctx.Err()
	}
}

// finish sends the chunk's last message (and, for a dump, the ones held).
func (b *builder) finish() error {
	if err := b.flush(true); err != nil {
		return err
	}
	for _, m := range b.held {
		if err := b.send(m); err != nil {
			return err
		}
	}
	b.held = b.held[:0]
	return nil
}

// publish publishes the messages of ch in order, with the chunk barriers:
// every earlier part acknowledged before a chunk's last part, the last
// part acknowledged before the next chunk.
func (l *loader) publish(ctx context.Context, ch <-chan *outMsg) error {
	type inflight struct {
		f    jetstream.PubAckFuture
		id   string
		rows int64
	}
	var pend []inflight
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	wait := func(p inflight) error {
		for {
			select {
			case <-p.f.Ok():
				return nil
			case err := <-p.f.Err():
				return fmt.Errorf("load: publishing %s: %w", p.id, err)
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
				// A server that restarted never acknowledges what it
				// lost: do not wait for the ack timeout.
				if l.st.Epoch() != l.epoch {
					return fmt.Errorf("%w while waiting for the ack of %s", errReconnected, p.id)
				}
			}
		}
	}
	waitAll := func() error {
		for _, p := range pend {
			if err := wait(p); err != nil {
				return err
			}
		}
		pend = pend[:0]
		return nil
	}
	var chunkRows int64
	for m := range ch {
		if l.st.Epoch() != l.epoch {
			return errReconnected
		}
		if m.h.Last {
			if err := waitAll(); err != nil {
				return err
			}
		} else if len(pend) >= l.cfg.InFlight {
			if err := wait(pend[0]); err != nil {
				return err
			}
			pend = pend[1:]
		}
		if m.h.Last {
			m.h.Total = l.total + chunkRows + m.h.Rows
		}
		f, err := l.st.PublishAsync(l.msg(&m.h, m.body))
		if err != nil {
			return err
		}
		if l.st.Epoch() != l.epoch {
			// The publish may have crossed a reconnection: to a
			// restarted server that lost this chunk's earlier parts,
			// acknowledged before. Never count such a chunk as stored
			// (the next attempt sends it again), nor take it for the
			// stream's tail (recheck).
			l.suspect(m.h.MsgID())
			return fmt.Errorf("%w while publishing %s", errReconnected, m.h.MsgID())
		}
		l.messages.Add(1)
		p := inflight{f: f, id: m.h.MsgID(), rows: m.h.Rows}
		chunkRows += m.h.Rows
		if !m.h.Last {
			pend = append(pend, p)
			continue
		}
		if err := wait(p); err != nil {
			return err
		}
		// The whole chunk is stored.
		l.lo, l.next, l.total, l.lastID = m.h.Hi, m.h.Chunk+1, m.h.Total, m.h.MsgID()
		l.rows.Add(chunkRows)
		l.chunks++
		chunkRows = 0
		l.report(false)
	}
	return waitAll()
}

func (l *loader) report(done bool) {
	if l.cfg.Progress == nil {
		return
	}
	el := time.Since(l.start)
	p := Progress{Table: l.t.Name, Load: l.id, Rows: l.total, Estimate: l.plan.estimate, Chunks: l.next, Elapsed: el, Done: done}
	if s := el.Seconds(); s > 0 {
		p.Rate = float64(l.rows.Load()) / s
	}
	if p.Rate > 0 && p.Estimate > p.Rows && !done {
		p.ETA = time.Duration(float64(p.Estimate-p.Rows) / p.Rate * float64(time.Second))
	}
	l.cfg.Progress(p)
}

// ParseTables builds the tables of `ferry load` from its flags: tables
// (each a name or a comma list), keys and versions (each "COL[,COL...]"
// for every table, or "TABLE=COL[,COL...]" for one), from and to ("K[,K...]",
// one table only), sep the key separator.
func ParseTables(tables, keys, versions []string, from, to, sep string) ([]Table, error) {
	var out []Table
	idx := map[string]int{}
	for _, list := range tables {
		for _, name := range strings.Split(list, ",") {
			if name = strings.TrimSpace(name); name == "" {
				continue
			}
			if _, dup := idx[name]; dup {
				return nil, fmt.Errorf("%w: table %q named twice", ErrInput, name)
			}
			idx[name] = len(out)
			out = append(out, Table{Name: name, KeySep: sep})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no table: --table NAME[,NAME...]", ErrInput)
	}
	apply := func(flag string, specs []string, set func(t *Table, cols []string) error) error {
		for _, spec := range specs {
			targets := out
			if name, cols, ok := strings.Cut(spec, "="); ok {
				i, found := idx[name]
				if !found {
					return fmt.Errorf("%w: %s %q names table %q, not one of --table", ErrInput, flag, spec, name)
				}
				targets, spec = out[i:i+1], cols
			} else if len(out) > 1 && flag == "--key" {
				return fmt.Errorf("%w: %s %q with several tables: say which, --key TABLE=COL[,COL...]", ErrInput, flag, spec)
			}
			cols := strings.Split(spec, ",")
			for i := range targets {
				if err := set(&targets[i], cols); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := apply("--key", keys, func(t *Table, cols []string) error {
		if t.Key != nil {
			return fmt.Errorf("%w: --key given twice for %s", ErrInput, t.Name)
		}
		t.Key = cols
		return nil
	}); err != nil {
		return nil, err
	}
	if err := apply("--version-column", versions, func(t *Table, cols []string) error {
		if len(cols) != 1 || cols[0] == "" {
			return fmt.Errorf("%w: --version-column for %s: one column", ErrInput, t.Name)
		}
		t.VersionColumn = cols[0]
		return nil
	}); err != nil {
		return nil, err
	}
	if from != "" || to != "" {
		if len(out) > 1 {
			return nil, fmt.Errorf("%w: --from/--to with several tables: load one table at a time", ErrInput)
		}
		if from != "" {
			out[0].From = strings.Split(from, ",")
		}
		if to != "" {
			out[0].To = strings.Split(to, ",")
		}
	}
	return out, nil
}
