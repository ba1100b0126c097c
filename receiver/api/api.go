// Package api serves a receiver's store to the microservice next to it over
// HTTP: rows by key and by prefix, the change log as pages and as a
// Server-Sent Events feed, status, health, readiness and metrics. Every
// response is JSON (errors too: {"error": ..., "code": ...}); the API binds to
// loopback by default and can require a bearer token.
package api

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the API reads.
type Store interface {
	Get(table string, key []byte) (store.Row, bool, error)
	ScanPage(table string, prefix, after []byte, limit, maxBytes int) ([]store.Row, bool, error)
	ChangesPage(after uint64, limit, maxBytes int) ([]store.Change, error)
	ChangeRange() (first, last uint64)
	Changed() <-chan struct{}
}

// Limits of the API.
const (
	DefaultPageSize     = 100
	MaxRowPageSize      = 1000
	MaxChangePageSize   = 10000
	sseBatch            = 1000
	DefaultSSEKeepAlive = 15 * time.Second
	// MaxPageBytes ends a page of rows or changes (and an SSE read) once
	// it holds this much (store.RowSize, store.ChangeSize), after at least
	// one item, whatever the limit: 100 rows of 8 MiB made one 839 MB
	// response before.
	MaxPageBytes = 4 << 20
	// MaxConcurrentPages bounds the pages being read and written at once,
	// every client together, so that memory is bounded whatever the
	// clients ask: at most this many times MaxPageBytes plus the change
	// log entry each is decoding. A request waits up to pageWait for its
	// turn, then answers 503 busy.
	MaxConcurrentPages = 8
	pageWait           = 10 * time.Second
)

// Config configures the handler.
type Config struct {
	Store Store
	// Status returns the receiver's status (ready fields included).
	Status func() Status
	// Metrics serves /metrics.
	Metrics http.Handler
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// /v1/* and /metrics (not on /healthz and /readyz, for probes).
	Token  string
	Logger *slog.Logger
	// KeepAlive is the SSE comment interval (default 15 s).
	KeepAlive time.Duration
	// Registerer receives the request duration histogram (nil: none).
	Registerer prometheus.Registerer
	// ExcludeOrigins leaves changes of these origins out of the SSE feed
	// (a service's own write-backs: no echo); ids still advance past them.
	ExcludeOrigins []string
}

// Handler is the receiver's HTTP API.
type Handler struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
	dur *prometheus.HistogramVec

	getRowH, scanRowsH http.HandlerFunc
	pages              chan struct{} // MaxConcurrentPages tokens
}

// page takes a page token, waiting up to pageWait; false means the request
// was answered (busy) or is gone.
func (h *Handler) page(w http.ResponseWriter, r *http.Request) bool {
	t := time.NewTimer(pageWait)
	defer t.Stop()
	select {
	case h.pages <- struct{}{}:
		return true
	case <-r.Context().Done():
		return false
	case <-t.C:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "busy", fmt.Sprintf("%d pages are being served; retry", MaxConcurrentPages))
		return false
	}
}

func (h *Handler) pageDone() { <-h.pages }

// New returns the API handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Status == nil {
		return nil, errors.New("api: Config.Store and Config.Status are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultSSEKeepAlive
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, pages: make(chan struct{}, MaxConcurrentPages),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_receiver_http_request_seconds",
			Help:    "Time to serve an API request (SSE streams excluded), by route.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 1.5, 24)}, []string{"route"})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(h.dur); err != nil {
			return nil, fmt.Errorf("api: registering metrics: %w", err)
		}
	}
	// Rows are routed by ServeHTTP, before the mux: the mux cleans paths
	// (rows/a/../b would answer for b), and keys are taken as given.
	h.getRowH = h.timed("GET /v1/tables/{table}/rows/{key...}", h.auth(h.getRow))
	h.scanRowsH = h.timed("GET /v1/tables/{table}/rows", h.auth(h.scanRows))
	h.route("GET /v1/changes", h.auth(h.changes))
	h.mux.HandleFunc("GET /v1/changes/stream", h.auth(h.stream))
	h.route("GET /v1/status", h.auth(h.status))
	h.route("GET /healthz", h.healthz)
	h.route("GET /readyz", h.readyz)
	if cfg.Metrics != nil {
		h.mux.Handle("GET /metrics", h.auth(cfg.Metrics.ServeHTTP))
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s %s; see GET /v1/status, /v1/tables/{table}/rows/{key}, /v1/changes", r.Method, r.URL.Path))
	})
	return h, nil
}

// route registers f for pattern, timing it.
func (h *Handler) route(pattern string, f http.HandlerFunc) {
	h.mux.HandleFunc(pattern, h.timed(pattern, f))
}

// timed returns f timed under the route label pattern.
func (h *Handler) timed(pattern string, f http.HandlerFunc) http.HandlerFunc {
	obs := h.dur.WithLabelValues(pattern)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		f(w, r)
		obs.Observe(time.Since(start).Seconds())
	}
}

// Handle registers an extra endpoint (such as a checkpoint action) behind
// the same token check.
func (h *Handler) Handle(pattern string, f http.HandlerFunc) {
	h.mux.HandleFunc(pattern, h.auth(f))
}

// HandleOpen registers an endpoint without the token check, for what
// carries no data: the files of the cockpit's page, which a browser must be
// able to load before it can send a token (its requests for data then go
// through the token-checked endpoints).
func (h *Handler) HandleOpen(pattern string, f http.Handler) {
	h.mux.Handle(pattern, f)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), tablesPath); ok {
		h.tables(w, r, rest)
		return
	}
	h.mux.ServeHTTP(w, r)
}

const tablesPath = "/v1/tables/"

// tables routes /v1/tables/{table}/rows[/{key}] on the path as it was sent
// (rest is what follows tablesPath, still escaped): the table is one
// percent-decoded segment, the key everything after "rows/", percent-decoded
// and never cleaned, so slashes, dot segments and empty segments are part of
// the key (README: "Keys in paths").
func (h *Handler) tables(w http.ResponseWriter, r *http.Request, rest string) {
	tableEsc, sub, _ := strings.Cut(rest, "/")
	keyEsc, isRow := strings.CutPrefix(sub, "rows/")
	if !isRow && sub != "rows" {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s %s; see /v1/tables/{table}/rows and /v1/tables/{table}/rows/{key}", r.Method, r.URL.EscapedPath()))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "bad_request", fmt.Sprintf("method %s not allowed on %s (GET only)", r.Method, r.URL.EscapedPath()))
		return
	}
	table, err := url.PathUnescape(tableEsc)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("table %q: bad percent-encoding: %v", tableEsc, err))
		return
	}
	if !isRow {
		h.scanRowsH(w, withTable(r, table, ""))
		return
	}
	key, err := url.PathUnescape(keyEsc)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("key %q: bad percent-encoding: %v", keyEsc, err))
		return
	}
	h.getRowH(w, withTable(r, table, key))
}

func withTable(r *http.Request, table, key string) *http.Request {
	r.SetPathValue("table", table)
	r.SetPathValue("key", key)
	return r
}

func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	if h.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + h.cfg.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")
			return
		}
		next(w, r)
	}
}

type errorJSON struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorJSON{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorJSON{Error: "encoding the response: " + err.Error(), Code: "internal"})
	}
	writeBody(w, status, append(b, '\n'))
}

// writeBody answers with a JSON document b (ending with its newline).
func writeBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func (h *Handler) internal(w http.ResponseWriter, what string, err error) {
	h.log.Error("api: "+what, "err", err)
	writeError(w, http.StatusInternalServerError, "internal", what+": "+err.Error())
}

func tableParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	t := r.PathValue("table")
	if t == "" || len(t) > format.MaxTableLen {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("table name must be 1 to %d bytes", format.MaxTableLen))
		return "", false
	}
	return t, true
}

func (h *Handler) getRow(w http.ResponseWriter, r *http.Request) {
	table, ok := tableParam(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	if key == "" || len(key) > format.MaxKeyLen {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("key must be 1 to %d bytes", format.MaxKeyLen))
		return
	}
	row, found, err := h.cfg.Store.Get(table, []byte(key))
	if err != nil {
		h.internal(w, "reading row", err)
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no row %q in table %q", key, table))
		return
	}
	writeJSON(w, http.StatusOK, Row(&row))
}

func limitParam(w http.ResponseWriter, q url.Values, max int) (int, bool) {
	s := q.Get("limit")
	if s == "" {
		return DefaultPageSize, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit=%q: want an integer from 1 to %d", s, max))
		return 0, false
	}
	return n, true
}

type rowsPage struct {
	Rows    []RowJSON `json:"rows"`
	More    bool      `json:"more"`
	Next    string    `json:"next,omitempty"`
	NextURL string    `json:"next_url,omitempty"`
}

func (h *Handler) scanRows(w http.ResponseWriter, r *http.Request) {
	table, ok := tableParam(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit, ok := limitParam(w, q, MaxRowPageSize)
	if !ok {
		return
	}
	prefix := []byte(q.Get("prefix"))
	var after []byte
	if q.Has("after") {
		after = []byte(q.Get("after"))
	}
	if len(prefix) > format.MaxKeyLen || len(after) > format.MaxKeyLen {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("prefix and after are keys: at most %d bytes", format.MaxKeyLen))
		return
	}
	if !h.page(w, r) {
		return
	}
	defer h.pageDone()
	rows, more, err := h.cfg.Store.ScanPage(table, prefix, after, limit, MaxPageBytes)
	if err != nil {
		h.internal(w, "scanning rows", err)
		return
	}
	page := rowsPage{More: more}
	if more {
		last := rows[len(rows)-1].Key
		page.Next, _ = keyFields(last)
		nq := url.Values{"after": {string(last)}, "limit": {strconv.Itoa(limit)}}
		if len(prefix) > 0 {
			nq.Set("prefix", string(prefix))
		}
		page.NextURL = "/v1/tables/" + url.PathEscape(table) + "/rows?" + nq.Encode()
	}
	// Encoded a row at a time: the response never exists whole in memory.
	writeList(w, h.log, page, `"rows":`, len(rows), func(i int) any { return Row(&rows[i]) })
}

// writeList writes v (a struct whose first JSON field is a list, left nil
// in v) as JSON with that list's n items (item(i)) encoded and written one
// at a time after key: the fields after the list come from v. Errors after
// the header is written can only end the response early.
func writeList(w http.ResponseWriter, log *slog.Logger, v any, key string, n int, item func(int) any) {
	rest, err := json.Marshal(v)
	head := "{" + key + "null"
	if err != nil || !strings.HasPrefix(string(rest), head) {
		writeError(w, http.StatusInternalServerError, "internal", fmt.Sprintf("encoding the response: %v", err))
		return
	}
	rest = rest[len(head):]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("{" + key + "[")
	enc := json.NewEncoder(bw)
	for i := 0; i < n; i++ {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(item(i)); err != nil {
			log.Error("api: encoding a page item", "err", err)
			return
		}
	}
	bw.WriteString("]")
	bw.Write(rest)
	bw.WriteByte('\n')
	bw.Flush()
}

type changesPage struct {
	Changes []ChangeJSON `json:"changes"`
	// Next is the cursor for the following page (after=Next).
	Next  uint64 `json:"next"`
	First uint64 `json:"first_change_id"`
	Last  uint64 `json:"last_change_id"`
}

func afterParam(w http.ResponseWriter, s string) (uint64, bool) {
	if s == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("after=%q: want a change id (non-negative integer)", s))
		return 0, false
	}
	return n, true
}

func (h *Handler) changes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := limitParam(w, q, MaxChangePageSize)
	if !ok {
		return
	}
	after, ok := afterParam(w, q.Get("after"))
	if !ok {
		return
	}
	if !h.page(w, r) {
		return
	}
	defer h.pageDone()
	cs, err := h.cfg.Store.ChangesPage(after, limit, MaxPageBytes)
	if errors.Is(err, store.ErrTrimmed) {
		writeError(w, http.StatusGone, "trimmed", err.Error()+"; re-read the rows (GET /v1/tables/{table}/rows) and follow from the first change id")
		return
	}
	if err != nil {
		h.internal(w, "reading changes", err)
		return
	}
	first, last := h.cfg.Store.ChangeRange()
	page := changesPage{Next: after, First: first, Last: last}
	if len(cs) > 0 {
		page.Next = cs[len(cs)-1].ID
	}
	writeList(w, h.log, page, `"changes":`, len(cs), func(i int) any { return Change(&cs[i]) })
}

// stream serves the change log as Server-Sent Events from ?after= or the
// Last-Event-ID header (which wins, so that a reconnecting EventSource
// resumes where it stopped). Each event has id = change id, event = change,
// data = the change as JSON.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	from := r.URL.Query().Get("after")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		from = id
	}
	after, ok := afterParam(w, strings.TrimSpace(from))
	if !ok {
		return
	}
	if first, _ := h.cfg.Store.ChangeRange(); store.TrimmedAfter(after, first) {
		writeError(w, http.StatusGone, "trimmed", fmt.Sprintf("changes after %d were trimmed, the log starts at %d; re-read the rows and follow from there", after, first))
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: 1000\n\n"); err != nil {
		return
	}
	rc.Flush()
	keep := time.NewTicker(h.cfg.KeepAlive)
	defer keep.Stop()
	buf := make([]byte, 0, 4096)
	for {
		changed := h.cfg.Store.Changed()
		sent, ok := h.sseBatch(w, r, &after, &buf)
		if !ok {
			return
		}
		if sent {
			if err := rc.Flush(); err != nil {
				return
			}
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-keep.C:
			if _, err := fmt.Fprintf(w, ": keep-alive\n\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// sseBatch writes the next changes after *after as events, holding a page
// token while it reads and writes them (waiting for one as long as the
// client stays). It reports whether it wrote any, and false in ok when the
// stream must end.
func (h *Handler) sseBatch(w http.ResponseWriter, r *http.Request, after *uint64, buf *[]byte) (sent, ok bool) {
	select {
	case h.pages <- struct{}{}:
	case <-r.Context().Done():
		return false, false
	}
	defer h.pageDone()
	cs, err := h.cfg.Store.ChangesPage(*after, sseBatch, MaxPageBytes)
	if err != nil {
		b, _ := json.Marshal(errorJSON{Error: err.Error(), Code: "trimmed"})
		fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
		http.NewResponseController(w).Flush()
		return false, false
	}
	for i := range cs {
		if o := cs[i].Origin; o != "" && slices.Contains(h.cfg.ExcludeOrigins, o) {
			*after = cs[i].ID // a service's own write-back: no echo
			continue
		}
		b, err := json.Marshal(Change(&cs[i]))
		if err != nil {
			h.log.Error("api: encoding change", "id", cs[i].ID, "err", err)
			return false, false
		}
		*buf = fmt.Appendf((*buf)[:0], "id: %d\nevent: change\ndata: ", cs[i].ID)
		*buf = append(*buf, b...)
		*buf = append(*buf, '\n', '\n')
		if _, err := w.Write(*buf); err != nil {
			return false, false
		}
		*after = cs[i].ID
	}
	return len(cs) > 0, true
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.cfg.Status())
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	st := h.cfg.Status()
	if !st.Ready {
		writeError(w, http.StatusServiceUnavailable, "not_ready", st.NotReadyReason)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
