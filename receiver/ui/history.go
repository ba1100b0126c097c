package ui

import (
	"sync"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

// Bounds of the history: one sample every DefaultInterval for the last hour,
// of at most MaxSources sources each, and the MaxErrors most recent errors.
// At those bounds it holds at most ~1800 × 64 points of ~64 bytes (~7 MiB,
// far less for the usual handful of sources).
const (
	DefaultInterval = 2 * time.Second
	DefaultWindow   = time.Hour
	MaxSources      = 64
	MaxErrors       = 50
)

// Point is one source in a sample.
type Point struct {
	Source       string  `json:"source"`
	State        string  `json:"state"`
	Changes      uint64  `json:"changes"`
	Transactions uint64  `json:"transactions"`
	LagSeconds   float64 `json:"lag_seconds"`
	BehindBytes  int64   `json:"behind_bytes"`
}

// Sample is the receiver's status at one time, reduced to what the charts
// draw. Throughput is the difference of Changes between two samples.
type Sample struct {
	Time            time.Time `json:"time"`
	Ready           bool      `json:"ready"`
	MessagesPending int64     `json:"messages_pending"`
	Sources         []Point   `json:"sources"`
	// Dropped counts the sources left out (past MaxSources).
	Dropped int `json:"dropped,omitempty"`
}

// ErrorEntry is an error the receiver reported, kept after it cleared so
// that the page shows what happened while nobody was looking.
type ErrorEntry struct {
	// Source is empty for errors of the whole receiver (consumer, webhook).
	Source string `json:"source,omitempty"`
	Error  string `json:"error"`
	// File and Offset name where in the source's change files the error is
	// (when the status says it: error_file, error_offset).
	File      string    `json:"file,omitempty"`
	Offset    *int64    `json:"offset,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Active is whether the last recorded status still reported it.
	Active bool `json:"active"`
}

// History is a bounded in-memory ring of status samples and recent errors.
// Safe for concurrent use.
type History struct {
	interval time.Duration

	mu      sync.Mutex
	samples []Sample // ring of cap(samples) entries
	next    int      // where the next sample goes
	full    bool
	errors  []ErrorEntry // oldest first, at most MaxErrors
}

// NewHistory keeps a sample every interval over window (interval ≤ 0:
// DefaultInterval; window ≤ 0: DefaultWindow).
func NewHistory(interval, window time.Duration) *History {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if window <= 0 {
		window = DefaultWindow
	}
	n := max(int(window/interval), 2)
	return &History{interval: interval, samples: make([]Sample, 0, n)}
}

// Interval is the time between two samples.
func (h *History) Interval() time.Duration { return h.interval }

// Record adds st as the sample of now unless the last sample is less than
// an interval old (the receiver calls it every second), and notes its
// errors whatever the interval.
func (h *History) Record(now time.Time, st api.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.noteErrors(now, st)
	if last, ok := h.lastLocked(); ok && now.Sub(last.Time) < h.interval-h.interval/10 {
		return
	}
	s := Sample{Time: now.UTC(), Ready: st.Ready, MessagesPending: st.MessagesPending}
	n := min(len(st.Sources), MaxSources)
	s.Sources = make([]Point, n)
	for i, src := range st.Sources[:n] {
		s.Sources[i] = Point{Source: src.Source, State: src.State, Changes: src.Changes, Transactions: src.Transactions,
			LagSeconds: src.LagSeconds, BehindBytes: src.BehindBytes}
	}
	s.Dropped = len(st.Sources) - n
	if len(h.samples) < cap(h.samples) {
		h.samples = append(h.samples, s)
		h.next = len(h.samples) % cap(h.samples)
		h.full = len(h.samples) == cap(h.samples)
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % len(h.samples)
}

func (h *History) lastLocked() (Sample, bool) {
	if len(h.samples) == 0 {
		return Sample{}, false
	}
	i := h.next - 1
	if i < 0 {
		i = len(h.samples) - 1
	}
	return h.samples[i], true
}

// Since returns the samples taken after t, oldest first.
func (h *History) Since(t time.Time) []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Sample, 0, len(h.samples))
	start := 0
	if h.full {
		start = h.next
	}
	for i := range h.samples {
		s := h.samples[(start+i)%len(h.samples)]
		if s.Time.After(t) {
			out = append(out, s)
		}
	}
	return out
}

// Errors returns the recent errors, newest first.
func (h *History) Errors() []ErrorEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ErrorEntry, len(h.errors))
	for i, e := range h.errors {
		out[len(out)-1-i] = e
	}
	return out
}

// noteErrors updates the error list from st: an error already listed (same
// source and text) is touched, a new one appended (the oldest dropped past
// MaxErrors), and every listed error not in st is marked inactive.
func (h *History) noteErrors(now time.Time, st api.Status) {
	seen := make(map[int]bool)
	note := func(e ErrorEntry) {
		for i := range h.errors {
			if h.errors[i].Source == e.Source && h.errors[i].Error == e.Error {
				h.errors[i].LastSeen, h.errors[i].Active = now.UTC(), true
				seen[i] = true
				return
			}
		}
		e.FirstSeen, e.LastSeen, e.Active = now.UTC(), now.UTC(), true
		if len(h.errors) == MaxErrors {
			copy(h.errors, h.errors[1:])
			h.errors = h.errors[:len(h.errors)-1]
			shifted := make(map[int]bool, len(seen))
			for i := range seen {
				if i > 0 {
					shifted[i-1] = true
				}
			}
			seen = shifted
		}
		h.errors = append(h.errors, e)
		seen[len(h.errors)-1] = true
	}
	if st.Error != "" {
		note(ErrorEntry{Error: st.Error})
	}
	for _, s := range st.Sources {
		if s.Error == "" {
			continue
		}
		e := ErrorEntry{Source: s.Source, Error: s.Error, File: s.ErrorFile}
		if s.ErrorFile != "" {
			off := s.ErrorOffset
			e.Offset = &off
		}
		note(e)
	}
	for i := range h.errors {
		if !seen[i] {
			h.errors[i].Active = false
		}
	}
}
