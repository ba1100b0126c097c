package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client reads a receiver's HTTP API: the status document as Status (the
// type the handler serves, so that the two cannot drift apart) and any other
// endpoint through Get. `ferry status`, the demo and the fault suite's
// checker use it.
type Client struct {
	base  string // scheme://host[:port][/path], no trailing slash
	token string
	http  *http.Client
}

// MaxResponseBytes bounds what the client reads of one response, so that a
// wrong address (or a hostile server) cannot make it buffer without limit.
const MaxResponseBytes = 64 << 20

// NewClient returns a client of the receiver at base, e.g.
// "http://127.0.0.1:8080". A base without a scheme ("127.0.0.1:8080",
// "localhost:8080") is taken as http://. token, when not empty, is sent as
// "Authorization: Bearer <token>". hc nil means a client with a 30 s timeout.
func NewClient(base, token string, hc *http.Client) (*Client, error) {
	u, err := ParseBaseURL(base)
	if err != nil {
		return nil, err
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, token: token, http: hc}, nil
}

// ParseBaseURL checks a receiver's base URL and returns it without a
// trailing slash. A base without a scheme is taken as http://.
func ParseBaseURL(base string) (string, error) {
	s := strings.TrimSpace(base)
	if s == "" {
		return "", errors.New("receiver URL is empty: want http://HOST:PORT, e.g. http://127.0.0.1:8080")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("receiver URL %q: %w; want http://HOST:PORT, e.g. http://127.0.0.1:8080", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("receiver URL %q: scheme %q, want http or https (e.g. http://127.0.0.1:8080)", base, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("receiver URL %q has no host: want http://HOST:PORT, e.g. http://127.0.0.1:8080", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("receiver URL %q: want the API's base URL without a query (e.g. http://127.0.0.1:8080)", base)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// Base returns the receiver's base URL.
func (c *Client) Base() string { return c.base }

// Error is a response other than 200 OK: the status, and the API's error
// document ({"error", "code"}) when the body is one.
type Error struct {
	URL        string
	StatusCode int
	Status     string
	// Code and Message are the API's error code and text; for a body that
	// is not an API error, Message is its start.
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("GET %s: %s: %s (%s)", e.URL, e.Status, e.Message, e.Code)
	}
	return fmt.Sprintf("GET %s: %s: %s", e.URL, e.Status, e.Message)
}

// Status returns the receiver's GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Get(ctx, "/v1/status", nil, &st)
	return st, err
}

// Get fetches path (with the query q, if any) and decodes its JSON answer
// into out. A status other than 200 is an *Error.
func (c *Client) Get(ctx context.Context, path string, q url.Values, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("asking the receiver at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("reading GET %s: %w", u, err)
	}
	if len(body) > MaxResponseBytes {
		return fmt.Errorf("GET %s: response larger than %d bytes", u, MaxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{URL: u, StatusCode: resp.StatusCode, Status: resp.Status}
		var doc errorJSON
		if json.Unmarshal(body, &doc) == nil && doc.Error != "" {
			e.Code, e.Message = doc.Code, doc.Error
		} else {
			e.Message = fmt.Sprintf("%.200q", body)
		}
		return e
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: decoding %.100q: %w (is this a Ferry receiver?)", u, body, err)
	}
	return nil
}
