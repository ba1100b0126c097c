package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/format/flatjson"
	"github.com/ferrysync/ferry/receiver/store"
)

// Write-back (SPEC.md, "Write-back commands"): a service submits a write as
// a command, POST /v1/commands; the receiver records its id, publishes it
// to the commands stream and answers 202 once JetStream has it. The legacy
// applies or rejects it and records the outcome in its change files, which
// come back to every receiver; GET /v1/commands/{id} reads that outcome
// from the store, where it is written in the same batch as the rows it
// changed (read-your-writes).

// CommandStore is what the command endpoints need of the store.
type CommandStore interface {
	// SubmitBatch records the commands (distinct ids) whole, or none of
	// them if an id is held for another command (store.ErrCommandConflict).
	SubmitBatch(ids []string, subs []store.Submitted) ([]store.SubmitResult, error)
	// Commands returns what the store holds of each command of ids (oks[i]
	// false: nothing).
	Commands(ids []string) (sts []store.CommandStatus, oks []bool, err error)
	// WatchCommands returns a channel closed once every command of ids
	// has an outcome in the store, and the function that ends the watch.
	WatchCommands(ids []string) (<-chan struct{}, func(), error)
}

// CommandPublisher makes commands durable in the commands stream: it
// returns once the stream acknowledged each of them or refused it, or ctx
// is done, with one error per command (nil: acknowledged; a repeat of the
// same id inside the stream's de-duplication window is acknowledged as the
// same message). It is called concurrently, by every submission at once.
type CommandPublisher interface {
	PublishCommands(ctx context.Context, cmds []*command.Command) []error
}

// CommandConfig enables the command endpoints.
type CommandConfig struct {
	Store     CommandStore
	Publisher CommandPublisher
	// Origin names this receiver's service: the commands' origin.
	Origin string
	// Tables maps every table a service may write to the legacy source
	// that masters it. Commands for any other table are refused.
	Tables map[string]string
	// MaxImage bounds a command's after image (0: command.DefaultMaxImage).
	MaxImage int
	// PublishTimeout bounds the wait for the stream's ack (default 10 s).
	PublishTimeout time.Duration
}

// MaxCommandWait bounds GET /v1/commands/{id}?wait=.
const MaxCommandWait = 60 * time.Second

// EnableCommands serves POST /v1/commands and GET /v1/commands/{id}.
func (h *Handler) EnableCommands(cfg CommandConfig) error {
	switch {
	case cfg.Store == nil || cfg.Publisher == nil:
		return errors.New("api: commands need a store and a publisher")
	case cfg.Origin == "":
		return errors.New("api: commands need an origin (the service's name)")
	case len(cfg.Tables) == 0:
		return errors.New("api: commands need at least one table and its source")
	case cfg.MaxImage > command.MaxImage:
		return fmt.Errorf("api: command image bound %d above %d", cfg.MaxImage, command.MaxImage)
	}
	if cfg.MaxImage <= 0 {
		cfg.MaxImage = command.DefaultMaxImage
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	c := &commands{cfg: cfg, h: h}
	h.route("POST /v1/commands", h.auth(c.submit))
	h.route("GET /v1/commands/{id}", h.auth(c.get))
	h.route("GET /v1/commands", h.auth(c.list))
	return nil
}

type commands struct {
	cfg CommandConfig
	h   *Handler
}

// CommandRequest is the body of POST /v1/commands.
type CommandRequest struct {
	ID      string          `json:"id"`
	Table   string          `json:"table"`
	Key     string          `json:"key"`
	Op      string          `json:"op"`
	After   json.RawMessage `json:"after,omitempty"`
	Version uint64          `json:"version,omitempty"`
}

// CommandJSON is a command's status as GET /v1/commands/{id} (and POST)
// serve it. State is pending, applied or rejected.
type CommandJSON struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Origin    string     `json:"origin,omitempty"`
	Table     string     `json:"table,omitempty"`
	Key       string     `json:"key,omitempty"`
	Op        string     `json:"op,omitempty"`
	Submitted *time.Time `json:"submitted,omitempty"`
	// Applied or rejected: where the legacy's record of it is.
	Source   string     `json:"source,omitempty"`
	Segment  uint64     `json:"segment,omitempty"`
	Offset   int64      `json:"offset,omitempty"`
	ChangeID uint64     `json:"change_id,omitempty"`
	Version  uint64     `json:"version,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	Time     *time.Time `json:"time,omitempty"`
}

func commandJSON(id string, st store.CommandStatus) CommandJSON {
	out := CommandJSON{ID: id, State: store.CommandPending}
	if s := st.Submitted; s != nil {
		t := s.Time.UTC()
		out.Table, out.Key, out.Op, out.Submitted, out.Source = s.Table, s.Key, s.Op, &t, s.Source
	}
	if o := st.Outcome; o != nil {
		t := time.Unix(0, o.Time).UTC()
		out.State, out.Origin, out.Source, out.Segment, out.Offset = o.State, o.Origin, o.Source, o.Segment, o.Offset
		out.ChangeID, out.Version, out.Reason, out.Time = o.ChangeID, o.Version, o.Reason, &t
	}
	return out
}

// Batch bounds of POST /v1/commands with an array and GET
// /v1/commands?ids=.
const (
	MaxCommandBatch      = 1000
	maxCommandBatchBytes = 8 << 20
)

// CommandError is one element's refusal in a batch (POST /v1/commands with
// an array): its index in the array, its id as sent, and the status and
// code the same command alone would have been answered with.
type CommandError struct {
	Index  int    `json:"index"`
	ID     string `json:"id,omitempty"`
	Status int    `json:"status"`
	Code   string `json:"code"`
	Error  string `json:"error"`
}

// CommandBatchJSON answers POST /v1/commands with an array (202: every
// command durable in the stream, in the order sent; 4xx and 503: the
// errors, one per refused element) and GET /v1/commands?ids=.
type CommandBatchJSON struct {
	Commands []CommandJSON  `json:"commands,omitempty"`
	Errors   []CommandError `json:"errors,omitempty"`
	Error    string         `json:"error,omitempty"`
	Code     string         `json:"code,omitempty"`
}

// submit serves POST /v1/commands: one command object, or an array of up
// to MaxCommandBatch of them, taken whole or not at all up to the stream
// (a bad element refuses the batch with every bad element listed; nothing
// is recorded or sent), then published together in one asynchronous
// window. 202 only once the stream acknowledged every one of them.
func (c *commands) submit(w http.ResponseWriter, r *http.Request) {
	// The image bound plus room for the other fields: a larger body is
	// refused before it is read whole. A batch has its own bound.
	one := int64(c.cfg.MaxImage) + 16<<10
	body, err := readBody(http.MaxBytesReader(w, r.Body, max(one, maxCommandBatchBytes)), r.ContentLength)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("command body over %d bytes: send fewer commands per request (an array of at most %d, %d bytes in all)", mb.Limit, MaxCommandBatch, maxCommandBatchBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("reading the command body: %v", err))
		return
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		if int64(len(body)) > one {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("command body over %d bytes: the after image may hold at most %d bytes", one, c.cfg.MaxImage))
			return
		}
		c.submitOne(r.Context(), w, body)
		return
	}
	raws, ok := flatjson.Elements(body)
	if !ok {
		var rs []json.RawMessage
		if err := json.Unmarshal(body, &rs); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("command batch: %v; want an array of {\"id\",\"table\",\"key\",\"op\",\"after\",\"version\"}", err))
			return
		}
		raws = make([][]byte, len(rs))
		for i := range rs {
			raws[i] = rs[i]
		}
	}
	switch {
	case len(raws) == 0:
		writeError(w, http.StatusBadRequest, "bad_request", "command batch: an empty array; send at least one command")
		return
	case len(raws) > MaxCommandBatch:
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("command batch of %d commands: at most %d per request; split it", len(raws), MaxCommandBatch))
		return
	}
	cmds := make([]command.Command, len(raws))
	var bad []CommandError
	first := make(map[string]int, len(raws))
	for i, raw := range raws {
		if e := c.parse(raw, true, &cmds[i]); e != nil { // the batch is valid JSON
			e.Index = i
			bad = append(bad, *e)
			continue
		}
		if j, dup := first[cmds[i].ID]; dup {
			bad = append(bad, CommandError{Index: i, ID: cmds[i].ID, Status: http.StatusBadRequest, Code: "duplicate_id",
				Error: fmt.Sprintf("command id %s is also element %d of this batch: an id names one command; send it once", cmds[i].ID, j)})
			continue
		}
		first[cmds[i].ID] = i
	}
	if len(bad) > 0 {
		writeBatchError(w, bad, "the batch was refused whole: nothing was recorded or sent; fix or leave out the elements listed and submit it again")
		return
	}
	c.submitCommands(r.Context(), w, cmds, true)
}

// readBody reads r to its end as io.ReadAll does, into one buffer sized
// for the size announced (Content-Length; -1: unknown) instead of one
// doubled from 512 bytes: io.ReadAll was 6% of the write-back path's
// allocations. An announced size is trusted up to 1 MiB only: a hostile
// peer announcing a large body costs what it sends, as with io.ReadAll.
func readBody(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(r)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(size, 1<<20)) + bytes.MinRead) // room for the read that sees EOF
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

func writeBatchError(w http.ResponseWriter, errs []CommandError, msg string) {
	status := errs[0].Status
	for _, e := range errs[1:] {
		if e.Status != status {
			status = http.StatusBadRequest // mixed: the elements say which
		}
	}
	code := errs[0].Code
	if len(errs) > 1 {
		code = "batch_refused"
	}
	writeJSON(w, status, CommandBatchJSON{Errors: errs, Error: fmt.Sprintf("%d of the commands: %s", len(errs), msg), Code: code})
}

// submitOne serves the single-command form: its answers are those it
// always had (a CommandJSON, or an error document).
func (c *commands) submitOne(ctx context.Context, w http.ResponseWriter, body []byte) {
	var cmd command.Command
	if e := c.parse(body, false, &cmd); e != nil {
		writeError(w, e.Status, e.Code, e.Error)
		return
	}
	c.submitCommands(ctx, w, []command.Command{cmd}, false)
}

// parse decodes and validates one command of the service's: nil, or the
// refusal (Index unset). valid: body is known to be valid JSON.
func (c *commands) parse(body []byte, valid bool, cmd *command.Command) *CommandError {
	req, compact, ok := decodePlainRequest(body, valid)
	if !ok {
		req, compact = CommandRequest{}, false
		d := json.NewDecoder(bytes.NewReader(body))
		d.DisallowUnknownFields()
		if err := d.Decode(&req); err != nil {
			return &CommandError{Status: http.StatusBadRequest, Code: "bad_request", Error: fmt.Sprintf("command body: %v; want {\"id\",\"table\",\"key\",\"op\",\"after\",\"version\"}", err)}
		}
	}
	if !command.ValidID(req.ID) {
		return &CommandError{ID: clipString(req.ID), Status: http.StatusBadRequest, Code: "invalid_id", Error: fmt.Sprintf("command id %q: want 1-%d of [A-Za-z0-9_.:-] (a UUID fits); it is the idempotency key", clipString(req.ID), command.MaxIDLen)}
	}
	source, ok := c.cfg.Tables[req.Table]
	if !ok {
		return &CommandError{ID: req.ID, Status: http.StatusBadRequest, Code: "unknown_table", Error: fmt.Sprintf("table %q takes no commands here: the receiver's command tables (--command-table) are %v", clipString(req.Table), tableNames(c.cfg.Tables))}
	}
	if len(req.After) > 0 && !compact {
		var buf bytes.Buffer
		if err := json.Compact(&buf, req.After); err == nil {
			req.After = buf.Bytes()
		}
	}
	*cmd = command.Command{ID: req.ID, Origin: c.cfg.Origin, Source: source, Table: req.Table, Key: req.Key,
		Op: req.Op, After: req.After, Version: req.Version, Submitted: time.Now().UTC()}
	if err := cmd.Validate(c.cfg.MaxImage); err != nil {
		e := &CommandError{ID: req.ID, Status: http.StatusBadRequest, Code: "invalid_command", Error: err.Error()}
		if len(req.After) > c.cfg.MaxImage {
			e.Code, e.Status = "too_large", http.StatusRequestEntityTooLarge
		}
		return e
	}
	return nil
}

// decodePlainRequest decodes a command request in the plain form
// (flatjson) as json.Decoder with DisallowUnknownFields would, After
// aliasing body; compact: After is compact already. valid: body is known
// to be valid JSON. False if the request
// is not in that form, and the caller decodes it with encoding/json.
func decodePlainRequest(body []byte, valid bool) (req CommandRequest, compact, ok bool) {
	open := flatjson.Open
	if valid {
		open = flatjson.OpenValid
	}
	o := open(body)
	seen := 0 // a field twice is left to encoding/json
	for o.Next() {
		f := 0
		switch string(o.Key()) {
		case "id":
			f, req.ID = 1, o.Str()
		case "table":
			f, req.Table = 2, o.Str()
		case "key":
			f, req.Key = 4, o.Str()
		case "op":
			f, req.Op = 8, o.Str()
		case "after":
			f = 16
			req.After, compact = o.Raw()
		case "version":
			f, req.Version = 32, o.Uint()
		default:
			o.Fail()
		}
		o.Once(&seen, f)
	}
	return req, compact, o.OK()
}

// submitCommands records valid commands of distinct ids, publishes those
// without an outcome and answers. batch: answer in the batch form.
func (c *commands) submitCommands(ctx context.Context, w http.ResponseWriter, cmds []command.Command, batch bool) {
	ids := make([]string, len(cmds))
	subs := make([]store.Submitted, len(cmds))
	for i := range cmds {
		cm := &cmds[i]
		ids[i] = cm.ID
		subs[i] = store.Submitted{Source: cm.Source, Table: cm.Table, Key: cm.Key, Op: cm.Op, Digest: digest(cm), Time: cm.Submitted}
	}
	res, err := c.cfg.Store.SubmitBatch(ids, subs)
	if errors.Is(err, store.ErrCommandConflict) {
		var errs []CommandError
		for i, r := range res {
			if r.Err == nil {
				continue
			}
			sub := r.Held
			errs = append(errs, CommandError{Index: i, ID: ids[i], Status: http.StatusConflict, Code: "id_in_use",
				Error: fmt.Sprintf("command id %s was submitted at %s for another command (%s %s/%s): an id names one command; use a new id",
					ids[i], sub.Time.Format(time.RFC3339Nano), sub.Op, sub.Table, sub.Key)})
		}
		if !batch {
			writeError(w, errs[0].Status, errs[0].Code, errs[0].Error)
			return
		}
		writeBatchError(w, errs, "the batch was refused whole: nothing was recorded or sent")
		return
	}
	if err != nil {
		c.h.log.Error("api: recording commands", "first", ids[0], "commands", len(ids), "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "recording the commands failed; submit them again with the same ids")
		return
	}
	// Published again on every submission until it has an outcome: a
	// publish that failed or was lost is retried by the service's retry,
	// and the stream (or past its window, the legacy) drops repeats.
	var pub []*command.Command
	var at []int
	for i := range cmds {
		cmds[i].Submitted = res[i].Held.Time // a repeat is the same command, submitted when it first was
		if res[i].Outcome == nil {
			pub, at = append(pub, &cmds[i]), append(at, i)
		}
	}
	var failed []CommandError
	if len(pub) > 0 {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
		errs := c.cfg.Publisher.PublishCommands(ctx, pub)
		cancel()
		for j, err := range errs {
			if err == nil {
				continue
			}
			c.h.log.Warn("api: publishing a command", "id", pub[j].ID, "err", err)
			failed = append(failed, CommandError{Index: at[j], ID: pub[j].ID, Status: http.StatusServiceUnavailable, Code: "unavailable",
				Error: fmt.Sprintf("the commands stream did not take command %s (%v): nothing is sent to the legacy until it does; submit it again with the same id", pub[j].ID, err)})
		}
	}
	if len(failed) > 0 {
		if !batch {
			writeError(w, failed[0].Status, failed[0].Code, failed[0].Error)
			return
		}
		writeBatchError(w, failed, "not taken by the commands stream; the others were: submit the whole batch again (same ids), repeats are dropped")
		return
	}
	out := make([]CommandJSON, len(cmds))
	for i := range cmds {
		out[i] = commandJSON(ids[i], store.CommandStatus{Submitted: &res[i].Held, Outcome: res[i].Outcome})
	}
	if !batch {
		w.Header().Set("Location", "/v1/commands/"+ids[0])
		writeCommand(w, http.StatusAccepted, &out[0])
		return
	}
	writeCommands(w, http.StatusAccepted, out)
}

// parseWait reads ?wait= (a duration up to MaxCommandWait, or seconds).
func parseWait(r *http.Request) (time.Duration, error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if n, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			d, err = time.Duration(n*float64(time.Second)), nil
		}
	}
	if err != nil || d < 0 || d > MaxCommandWait {
		return 0, fmt.Errorf("wait=%q: want a duration up to %s (5s, 500ms)", clipString(s), MaxCommandWait)
	}
	return d, nil
}

// await waits until every command of ids has an outcome, wait has passed
// or the request is gone, and returns what the store holds of each then.
// Woken by the last of these commands' outcomes only, not by every commit:
// a thousand waiting services cost nothing while others' commands and
// changes are applied.
func (c *commands) await(ctx context.Context, ids []string, wait time.Duration) ([]store.CommandStatus, []bool, error) {
	if wait > 0 {
		done, stop, err := c.cfg.Store.WatchCommands(ids)
		if err != nil {
			return nil, nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		stop()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
	return c.cfg.Store.Commands(ids)
}

func (c *commands) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !command.ValidID(id) {
		writeError(w, http.StatusBadRequest, "invalid_id", fmt.Sprintf("command id %q: want 1-%d of [A-Za-z0-9_.:-]", clipString(id), command.MaxIDLen))
		return
	}
	wait, err := parseWait(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	sts, oks, err := c.await(r.Context(), []string{id}, wait)
	if r.Context().Err() != nil {
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if !oks[0] {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no command %s: it was not submitted through this receiver and no outcome for it has arrived", id))
		return
	}
	out := commandJSON(id, sts[0])
	writeCommand(w, http.StatusOK, &out)
}

// StateUnknown is the state GET /v1/commands?ids= gives an id the
// receiver knows nothing of (GET /v1/commands/{id}: 404).
const StateUnknown = "unknown"

// list serves GET /v1/commands?ids=a,b,c[&wait=5s]: the status of up to
// MaxCommandBatch commands, in the order asked, once every one has an
// outcome or after wait.
func (c *commands) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("ids")
	if q == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "GET /v1/commands needs ids=ID,ID,... (the commands to read)")
		return
	}
	ids := strings.Split(q, ",")
	if len(ids) > MaxCommandBatch {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%d ids: at most %d per request; split them", len(ids), MaxCommandBatch))
		return
	}
	var bad []CommandError
	for i, id := range ids {
		if !command.ValidID(id) {
			bad = append(bad, CommandError{Index: i, ID: clipString(id), Status: http.StatusBadRequest, Code: "invalid_id",
				Error: fmt.Sprintf("command id %q: want 1-%d of [A-Za-z0-9_.:-], ids separated by commas", clipString(id), command.MaxIDLen)})
		}
	}
	if len(bad) > 0 {
		writeBatchError(w, bad, "not command ids")
		return
	}
	wait, err := parseWait(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	sts, oks, err := c.await(r.Context(), ids, wait)
	if r.Context().Err() != nil {
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	out := make([]CommandJSON, len(ids))
	for i, id := range ids {
		out[i] = commandJSON(id, sts[i])
		if !oks[i] {
			out[i].State = StateUnknown
		}
	}
	writeCommands(w, http.StatusOK, out)
}

// digest identifies a command's content (not its submission time): the
// same id must come with the same digest.
func digest(c *command.Command) string {
	// Source, table, key, op and version, each followed by a NUL, then the
	// after image: the digests recorded by every release so far.
	b := make([]byte, 0, len(c.Source)+len(c.Table)+len(c.Key)+len(c.Op)+25+len(c.After))
	for _, s := range [...]string{c.Source, c.Table, c.Key, c.Op} {
		b = append(append(b, s...), 0)
	}
	b = append(strconv.AppendUint(b, c.Version, 10), 0)
	sum := sha256.Sum256(append(b, c.After...))
	return hex.EncodeToString(sum[:16])
}

func clipString(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func tableNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
