package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/ferrysync/ferry/format/command"
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
	Submit(id string, sub store.Submitted) (store.Submitted, bool, error)
	Command(id string) (store.CommandStatus, bool, error)
	// WatchCommand returns a channel closed once the command has an
	// outcome in the store, and the function that ends the watch.
	WatchCommand(id string) (<-chan struct{}, func())
}

// CommandPublisher makes a command durable in the commands stream: it
// returns once the stream acknowledged it (a repeat of the same id inside
// the stream's de-duplication window is acknowledged as the same message).
type CommandPublisher interface {
	PublishCommand(ctx context.Context, c *command.Command) error
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

func (c *commands) submit(w http.ResponseWriter, r *http.Request) {
	// The image bound plus room for the other fields: a larger body is
	// refused before it is read whole.
	r.Body = http.MaxBytesReader(w, r.Body, int64(c.cfg.MaxImage)+16<<10)
	var req CommandRequest
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("command body over %d bytes: the after image may hold at most %d bytes", mb.Limit, c.cfg.MaxImage))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("command body: %v; want {\"id\",\"table\",\"key\",\"op\",\"after\",\"version\"}", err))
		return
	}
	if !command.ValidID(req.ID) {
		writeError(w, http.StatusBadRequest, "invalid_id", fmt.Sprintf("command id %q: want 1-%d of [A-Za-z0-9_.:-] (a UUID fits); it is the idempotency key", clipString(req.ID), command.MaxIDLen))
		return
	}
	source, ok := c.cfg.Tables[req.Table]
	if !ok {
		writeError(w, http.StatusBadRequest, "unknown_table", fmt.Sprintf("table %q takes no commands here: the receiver's command tables (--command-table) are %v", clipString(req.Table), tableNames(c.cfg.Tables)))
		return
	}
	if len(req.After) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, req.After); err == nil {
			req.After = buf.Bytes()
		}
	}
	cmd := command.Command{ID: req.ID, Origin: c.cfg.Origin, Source: source, Table: req.Table, Key: req.Key,
		Op: req.Op, After: req.After, Version: req.Version, Submitted: time.Now().UTC()}
	if err := cmd.Validate(c.cfg.MaxImage); err != nil {
		code, status := "invalid_command", http.StatusBadRequest
		if len(req.After) > c.cfg.MaxImage {
			code, status = "too_large", http.StatusRequestEntityTooLarge
		}
		writeError(w, status, code, err.Error())
		return
	}
	sub, _, err := c.cfg.Store.Submit(cmd.ID, store.Submitted{Source: source, Table: cmd.Table, Key: cmd.Key, Op: cmd.Op,
		Digest: digest(&cmd), Time: cmd.Submitted})
	if errors.Is(err, store.ErrCommandConflict) {
		writeError(w, http.StatusConflict, "id_in_use", fmt.Sprintf("command id %s was submitted at %s for another command (%s %s/%s): an id names one command; use a new id",
			cmd.ID, sub.Time.Format(time.RFC3339Nano), sub.Op, sub.Table, sub.Key))
		return
	}
	if err != nil {
		c.h.log.Error("api: recording a command", "id", cmd.ID, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "recording the command failed; submit it again with the same id")
		return
	}
	cmd.Submitted = sub.Time // a repeat is the same command, submitted when it first was
	st, _, err := c.cfg.Store.Command(cmd.ID)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if st.Outcome == nil {
		// Published again on every submission until it has an outcome: a
		// publish that failed or was lost is retried by the service's retry,
		// and the stream (or past its window, the legacy) drops repeats.
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.PublishTimeout)
		err := c.cfg.Publisher.PublishCommand(ctx, &cmd)
		cancel()
		if err != nil {
			c.h.log.Warn("api: publishing a command", "id", cmd.ID, "err", err)
			writeError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("the commands stream did not take command %s (%v): nothing is sent to the legacy until it does; submit it again with the same id", cmd.ID, err))
			return
		}
	}
	w.Header().Set("Location", "/v1/commands/"+cmd.ID)
	writeJSON(w, http.StatusAccepted, commandJSON(cmd.ID, st))
}

func (c *commands) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !command.ValidID(id) {
		writeError(w, http.StatusBadRequest, "invalid_id", fmt.Sprintf("command id %q: want 1-%d of [A-Za-z0-9_.:-]", clipString(id), command.MaxIDLen))
		return
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			if n, nerr := strconv.ParseFloat(s, 64); nerr == nil {
				d, err = time.Duration(n*float64(time.Second)), nil
			}
		}
		if err != nil || d < 0 || d > MaxCommandWait {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("wait=%q: want a duration up to %s (5s, 500ms)", clipString(s), MaxCommandWait))
			return
		}
		wait = d
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		// Woken by this command's outcome only, not by every commit: a
		// thousand waiting services cost nothing while others' commands
		// and changes are applied.
		changed, unwatch := c.cfg.Store.WatchCommand(id)
		st, ok, err := c.cfg.Store.Command(id)
		if err != nil {
			unwatch()
			writeError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		if st.Outcome != nil || (wait == 0 && ok) {
			unwatch()
			writeJSON(w, http.StatusOK, commandJSON(id, st))
			return
		}
		select {
		case <-changed:
			unwatch()
			continue
		case <-r.Context().Done():
			unwatch()
			return
		case <-deadline.C:
		}
		unwatch()
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no command %s: it was not submitted through this receiver and no outcome for it has arrived", id))
			return
		}
		writeJSON(w, http.StatusOK, commandJSON(id, st))
		return
	}
}

// digest identifies a command's content (not its submission time): the
// same id must come with the same digest.
func digest(c *command.Command) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%d\x00", c.Source, c.Table, c.Key, c.Op, c.Version)
	h.Write(c.After)
	return hex.EncodeToString(h.Sum(nil)[:16])
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
