package check

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// HTTPReceiver reads a running receiver through its HTTP API (GET
// /v1/tables/{table}/rows, /v1/changes, /v1/status). It implements Receiver.
type HTTPReceiver struct {
	base   string
	client *http.Client
	// PageSize is the limit asked for per page (default 1000).
	PageSize int
}

var _ Receiver = (*HTTPReceiver)(nil)

// NewHTTPReceiver returns a client of the receiver at base
// ("http://127.0.0.1:8080").
func NewHTTPReceiver(base string) *HTTPReceiver {
	return &HTTPReceiver{base: base, client: &http.Client{Timeout: 30 * time.Second}, PageSize: 1000}
}

func (h *HTTPReceiver) get(ctx context.Context, path string, q url.Values, out any) error {
	u := h.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.300s", u, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: decoding %.100s: %w", u, body, err)
	}
	return nil
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
}

func (a *apiRow) got() (GotRow, error) {
	g := GotRow{Key: a.Key, Version: a.Version.id().String(), Value: a.Value}
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
	State      string     `json:"state"`
	Error      string     `json:"error"`
	Segment    uint64     `json:"applied_segment"`
	Offset     int64      `json:"applied_offset"`
	Changes    uint64     `json:"changes"`
	LastCommit *time.Time `json:"last_commit_time"`
	TornBytes  int64      `json:"torn_bytes"`
}

// Status returns the receiver's applied position per source.
func (h *HTTPReceiver) Status(ctx context.Context) (map[string]Applied, error) {
	var st struct {
		Sources []struct {
			Source string `json:"source"`
			Applied
		} `json:"sources"`
	}
	if err := h.get(ctx, "/v1/status", nil, &st); err != nil {
		return nil, err
	}
	out := make(map[string]Applied, len(st.Sources))
	for _, s := range st.Sources {
		out[s.Source] = s.Applied
	}
	return out, nil
}
