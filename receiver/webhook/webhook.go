// Package webhook pushes a receiver's change log to an HTTP endpoint of the
// microservice, in order, in batches, at least once: a batch is retried with
// exponential backoff until the endpoint answers 2xx, never skipped, and the
// delivery position is stored in the receiver's store like the applied
// position. Every change carries its change id, so the endpoint de-duplicates
// the redeliveries that follow a crash between delivery and record.
//
// Request: POST <url>, Content-Type: application/json, body
// {"changes": [<change>, ...]} (see api.ChangeJSON), headers
// Ferry-First-Change-Id and Ferry-Last-Change-Id.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the part of the store the webhook reads and writes.
type Store interface {
	ChangesPage(after uint64, limit, maxBytes int) ([]store.Change, error)
	Changed() <-chan struct{}
	Webhook() uint64
	SetWebhook(id uint64) error
}

// Config configures a Webhook.
type Config struct {
	URL string
	// Token, when set, is sent as "Authorization: Bearer <token>".
	Token string
	// BatchSize bounds the changes per request (default 500).
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait between retries (defaults
	// 100 ms and 30 s); the wait doubles after each failure.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one request (default 30 s).
	Timeout time.Duration
	Client  *http.Client
	Logger  *slog.Logger
	// Registerer receives the webhook's metrics (nil: none).
	Registerer prometheus.Registerer
	// ExcludeOrigins leaves out changes of these origins (a service's own
	// write-backs: no echo); the cursor still moves past them.
	ExcludeOrigins []string
}

// Webhook delivers changes.
type Webhook struct {
	cfg       Config
	st        Store
	log       *slog.Logger
	delivered prometheus.Counter
	failures  prometheus.Counter
	requests  prometheus.Counter

	mu      sync.Mutex
	lastErr error
}

// New validates cfg and returns a Webhook.
func New(st Store, cfg Config) (*Webhook, error) {
	if cfg.URL == "" {
		return nil, errors.New("webhook: empty URL")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.BatchSize > api.MaxChangePageSize {
		return nil, fmt.Errorf("webhook: batch size %d over %d", cfg.BatchSize, api.MaxChangePageSize)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Webhook{cfg: cfg, st: st, log: cfg.Logger,
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_receiver_webhook_delivered_changes_total", Help: "Changes the webhook endpoint acknowledged."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_receiver_webhook_failures_total", Help: "Webhook requests that failed and will be retried."}),
		requests:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_receiver_webhook_requests_total", Help: "Webhook requests sent."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.delivered, w.failures, w.requests} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("webhook: registering metrics: %w", err)
			}
		}
	}
	return w, nil
}

// LastError returns the error of the last failed delivery, nil once a
// delivery succeeded.
func (w *Webhook) LastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// Run delivers changes until ctx is done.
func (w *Webhook) Run(ctx context.Context) error {
	backoff := w.cfg.MinBackoff
	for {
		changed := w.st.Changed()
		after := w.st.Webhook()
		cs, err := w.st.ChangesPage(after, w.cfg.BatchSize, api.MaxPageBytes)
		if err == nil && len(cs) > 0 {
			err = w.deliver(ctx, cs)
			if err == nil {
				err = w.st.SetWebhook(cs[len(cs)-1].ID)
				if err != nil {
					return err // the store failed: stop the receiver
				}
				w.delivered.Add(float64(len(cs)))
				w.setErr(nil)
				backoff = w.cfg.MinBackoff
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.failures.Inc()
			w.setErr(err)
			w.log.Warn("webhook delivery failed; retrying", "after_change", after, "retry_in", backoff, "err", err)
			// Full jitter keeps many receivers from retrying in step.
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			backoff = min(backoff*2, w.cfg.MaxBackoff)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (w *Webhook) setErr(err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
}

type body struct {
	Changes []api.ChangeJSON `json:"changes"`
}

func (w *Webhook) deliver(ctx context.Context, cs []store.Change) error {
	b := body{Changes: make([]api.ChangeJSON, 0, len(cs))}
	for i := range cs {
		if !slices.Contains(w.cfg.ExcludeOrigins, cs[i].Origin) || cs[i].Origin == "" {
			b.Changes = append(b.Changes, api.Change(&cs[i]))
		}
	}
	if len(b.Changes) == 0 {
		return nil // all of the service's own: nothing to deliver
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("webhook: encoding changes %d..%d: %w", cs[0].ID, cs[len(cs)-1].ID, err)
	}
	rctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, w.cfg.URL, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("webhook: building request to %s: %w", w.cfg.URL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Ferry-First-Change-Id", strconv.FormatUint(cs[0].ID, 10))
	req.Header.Set("Ferry-Last-Change-Id", strconv.FormatUint(cs[len(cs)-1].ID, 10))
	if w.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
	}
	w.requests.Inc()
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: POST %s (changes %d..%d): %w", w.cfg.URL, cs[0].ID, cs[len(cs)-1].ID, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: POST %s (changes %d..%d): %s: %q", w.cfg.URL, cs[0].ID, cs[len(cs)-1].ID, resp.Status, msg)
	}
	return nil
}
