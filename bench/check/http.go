package check

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

// HTTPReceiver reads a running receiver through its HTTP API (GET
// /v1/tables/{table}/rows, /v1/changes, /v1/status), with the API's own
// client. It implements Receiver.
type HTTPReceiver struct {
	c   *api.Client
	err error // a base that is not a URL, returned by every call
	// PageSize is the limit asked for per page (default 1000).
	PageSize int
}

var _ Receiver = (*HTTPReceiver)(nil)

// NewHTTPReceiver returns a client of the receiver at base
// ("http://127.0.0.1:8080"). A base that is not a URL is the error of
// every call.
func NewHTTPReceiver(base string) *HTTPReceiver {
	c, err := api.NewClient(base, "", &http.Client{Timeout: 30 * time.Second})
	return &HTTPReceiver{c: c, err: err, PageSize: 1000}
}

func (h *HTTPReceiver) get(ctx context.Context, path string, q url.Values, out any) error {
	if h.err != nil {
		return h.err
	}
	return h.c.Get(ctx, path, q, out)
}

// apiVersion is a change's identity as the API serves it.
type apiVersion struct {
	Source  string `json:"source"`
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
	Index   int    `json:"index"`
}

func (v apiVersion) id() ChangeID {
	return ChangeID{Source: v.Source, Segment: v.Segment, Offset: v.Offset, Index: v.Index}
}

// apiRow is a row as GET /v1/tables/{table}/rows serves it: JSON images as
// themselves, others as base64 strings (Encoding says which).
type apiRow struct {
	Key       string          `json:"key"`
	KeyBase64 string          `json:"key_base64"`
	Value     json.RawMessage `json:"value"`
	Encoding  string          `json:"encoding"`
	Version   apiVersion      `json:"version"`
	Load      string          `json:"load"`
}

func (a *apiRow) got() (GotRow, error) {
	g := GotRow{Key: a.Key, Version: a.Version.id().String(), Value: a.Value, Load: a.Load}
	if a.KeyBase64 != "" {
		k, err := base64.StdEncoding.DecodeString(a.KeyBase64)
		if err != nil {
			return g, fmt.Errorf("row key %q: %w", a.KeyBase64, err)
		}
		g.Key = string(k)
	}
	if a.Encoding == "base64" {
		var s string
		if err := json.Unmarshal(a.Value, &s); err != nil {
			return g, fmt.Errorf("row %q: base64 value: %w", g.Key, err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return g, fmt.Errorf("row %q: base64 value: %w", g.Key, err)
		}
		g.Value = b
	}
	return g, nil
}

// ScanRows pages through every row of table.
func (h *HTTPReceiver) ScanRows(ctx context.Context, table string, fn func(GotRow) error) error {
	after := ""
	for {
		var page struct {
			Rows []apiRow `json:"rows"`
			More bool     `json:"more"`
			Next string   `json:"next"`
		}
		q := url.Values{"limit": {strconv.Itoa(h.PageSize)}}
		if after != "" {
			q.Set("after", after)
		}
		if err := h.get(ctx, "/v1/tables/"+url.PathEscape(table)+"/rows", q, &page); err != nil {
			return err
		}
		for i := range page.Rows {
			g, err := page.Rows[i].got()
			if err != nil {
				return err
			}
			if err := fn(g); err != nil {
				return err
			}
			after = g.Key
		}
		if !page.More || len(page.Rows) == 0 {
			return nil
		}
		if page.Next != "" {
			after = page.Next
		}
	}
}

// ScanChanges pages through the whole change feed.
func (h *HTTPReceiver) ScanChanges(ctx context.Context, fn func(ChangeID) error) error {
	var after uint64
	for {
		var page struct {
			Changes []struct {
				ID      uint64     `json:"id"`
				Version apiVersion `json:"version"`
			} `json:"changes"`
		}
		q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(h.PageSize * 10)}}
		if err := h.get(ctx, "/v1/changes", q, &page); err != nil {
			return err
		}
		if len(page.Changes) == 0 {
			return nil
		}
		for _, c := range page.Changes {
			if err := fn(c.Version.id()); err != nil {
				return err
			}
			after = c.ID
		}
	}
}

// Applied is how far a receiver applied one source, from GET /v1/status.
type Applied struct {
	State      string
	Error      string
	Segment    uint64
	Offset     int64
	Changes    uint64
	LastCommit *time.Time
	TornBytes  int64
}

// Status returns the receiver's applied position per source.
func (h *HTTPReceiver) Status(ctx context.Context) (map[string]Applied, error) {
	if h.err != nil {
		return nil, h.err
	}
	st, err := h.c.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Applied, len(st.Sources))
	for _, s := range st.Sources {
		out[s.Source] = Applied{State: s.State, Error: s.Error, Segment: s.AppliedSegment, Offset: s.AppliedOffset,
			Changes: s.Changes, LastCommit: s.LastCommitTime, TornBytes: s.TornBytes}
	}
	return out, nil
}
