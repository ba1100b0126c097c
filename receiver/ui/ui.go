// Package ui is the receiver's cockpit: one web page, served at /ui/, that
// shows a migration's roll-out at a glance — per source the stages (on disk,
// shipped, applied) and their lag, charts of lag and throughput over the last
// hour, the readiness gate and why it is red, initial loads and write-back
// commands, recent errors naming file and offset, a row browser and the live
// change feed.
//
// The page is plain HTML, CSS and one script embedded in the binary: no build
// step, no CDN, it works offline. It reads the receiver's own API
// (/v1/status, /v1/tables/.../rows, /v1/changes/stream) and the History this
// package keeps (/ui/history): a bounded in-memory ring of status samples
// that the receiver records every second.
//
// The page's files carry no data and are served without the API's token,
// because a browser cannot send a bearer token when it navigates; every
// request that reads data goes through the API with the token (the page asks
// for it, or takes it from the URL's #token= fragment, which never reaches the
// server). Sections for status fields the receiver may not have (loads,
// commands, on_disk_*, behind_records) render when present and say "none"
// otherwise; receiver/README.md lists the agreed field names.
package ui

import (
	"embed"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Static serves the page's files (index.html, cockpit.css, cockpit.js)
// under prefix (such as "/ui/").
func Static(prefix string) http.Handler {
	files := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page must never be framed by another site, and its script
		// talks only to this origin.
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("Cache-Control", "no-cache")
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/static/" + strings.TrimPrefix(r.URL.Path, prefix)
		r2.URL.RawPath = ""
		files.ServeHTTP(w, r2)
	})
}

// historyJSON is what /ui/history answers.
type historyJSON struct {
	IntervalSeconds float64      `json:"interval_seconds"`
	Samples         []Sample     `json:"samples"`
	Errors          []ErrorEntry `json:"errors"`
}

// HistoryHandler serves h as JSON: the samples after ?since= (a time in
// RFC 3339, or Unix milliseconds; default: all) and the recent errors.
func HistoryHandler(h *History) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var since time.Time
		if s := r.URL.Query().Get("since"); s != "" {
			if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
				since = time.UnixMilli(ms)
			} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				since = t
			} else {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "since=" + strconv.Quote(s) + ": want Unix milliseconds or an RFC 3339 time", "code": "bad_request"})
				return
			}
		}
		b, err := json.Marshal(historyJSON{IntervalSeconds: h.Interval().Seconds(), Samples: h.Since(since), Errors: h.Errors()})
		if err != nil {
			http.Error(w, `{"error":"encoding the history","code":"internal"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(b, '\n'))
	}
}
