package api

import (
	"bytes"
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
	Method     string // GET when empty
	URL        string
	StatusCode int
	Status     string
	// Code and Message are the API's error code and text; for a body that
	// is not an API error, Message is its start.
	Code    string
	Message string
	// Commands: a refused batch's elements (POST /v1/commands with an
	// array), each with its index, status and reason.
	Commands []CommandError
}

func (e *Error) Error() string {
	m := e.Method
	if m == "" {
		m = http.MethodGet
	}
	if e.Code != "" {
		return fmt.Sprintf("%s %s: %s: %s (%s)", m, e.URL, e.Status, e.Message, e.Code)
	}
	return fmt.Sprintf("%s %s: %s: %s", m, e.URL, e.Status, e.Message)
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
	body, err := readBody(io.LimitReader(resp.Body, MaxResponseBytes+1), resp.ContentLength)
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
	if err := unmarshalResponse(body, out); err != nil {
		return fmt.Errorf("GET %s: decoding %.100q: %w (is this a Ferry receiver?)", u, body, err)
	}
	return nil
}

// SubmitCommand posts a write-back command (POST /v1/commands) and returns
// its status once the receiver made it durable (202). Submitting the same
// request again is safe: the id is the idempotency key. A refusal (4xx, or
// 503 while the commands stream is unreachable: submit again) is an *Error.
func (c *Client) SubmitCommand(ctx context.Context, req CommandRequest) (CommandJSON, error) {
	var out CommandJSON
	err := c.postCommands(ctx, req, &out, "command "+req.ID)
	return out, err
}

// SubmitCommands posts up to MaxCommandBatch commands of distinct ids in
// one request (POST /v1/commands with an array) and returns their statuses,
// in order, once the receiver made every one durable (202). A refusal is an
// *Error whose Commands say which elements and why: bad input refuses the
// batch whole (nothing is sent); after a 503 submit the same batch again.
func (c *Client) SubmitCommands(ctx context.Context, reqs []CommandRequest) ([]CommandJSON, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	var out CommandBatchJSON
	err := c.postCommands(ctx, reqs, &out, fmt.Sprintf("%d commands (first %s)", len(reqs), reqs[0].ID))
	return out.Commands, err
}

func (c *Client) postCommands(ctx context.Context, v any, out any, what string) error {
	body, err := marshalRequest(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", what, err)
	}
	u := c.base + "/v1/commands"
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return fmt.Errorf("submitting %s to the receiver at %s: %w", what, c.base, err)
	}
	defer resp.Body.Close()
	b, err := readBody(io.LimitReader(resp.Body, MaxResponseBytes), resp.ContentLength)
	if err != nil {
		return fmt.Errorf("reading POST %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusAccepted {
		e := &Error{Method: http.MethodPost, URL: u, StatusCode: resp.StatusCode, Status: resp.Status}
		var doc CommandBatchJSON
		if json.Unmarshal(b, &doc) == nil && doc.Error != "" {
			e.Code, e.Message, e.Commands = doc.Code, doc.Error, doc.Errors
		} else {
			e.Message = fmt.Sprintf("%.200q", b)
		}
		return e
	}
	if err := unmarshalResponse(b, out); err != nil {
		return fmt.Errorf("POST %s: decoding %.100q: %w", u, b, err)
	}
	return nil
}

// Commands returns the statuses of up to MaxCommandBatch commands (GET
// /v1/commands?ids=), in order; with wait > 0 the receiver answers as soon
// as every one has an outcome, or after wait with those still pending. An
// id the receiver knows nothing of has State StateUnknown.
func (c *Client) Commands(ctx context.Context, ids []string, wait time.Duration) ([]CommandJSON, error) {
	q := url.Values{"ids": {strings.Join(ids, ",")}}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var out CommandBatchJSON
	err := c.Get(ctx, "/v1/commands", q, &out)
	return out.Commands, err
}

// Command returns a command's status (GET /v1/commands/{id}); with wait > 0
// the receiver answers as soon as the command has an outcome, or after wait
// (at most MaxCommandWait) with its pending status. An id the receiver
// knows nothing of is an *Error with StatusCode 404.
func (c *Client) Command(ctx context.Context, id string, wait time.Duration) (CommandJSON, error) {
	var out CommandJSON
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	err := c.Get(ctx, "/v1/commands/"+url.PathEscape(id), q, &out)
	return out, err
}
