package demo

import (
	"slices"
	"sync"
	"time"
)

// latencies records commit→applied delays of transactions.
type latencies struct {
	mu      sync.Mutex
	samples []time.Duration
	dropped int
}

const maxSamples = 4 << 20

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	if len(l.samples) < maxSamples {
		l.samples = append(l.samples, d)
	} else {
		l.dropped++
	}
	l.mu.Unlock()
}

// Quantiles of the recorded delays.
type Quantiles struct {
	Count         int
	P50, P99, Max time.Duration
}

func (l *latencies) quantiles() Quantiles {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	l.mu.Unlock()
	if len(s) == 0 {
		return Quantiles{}
	}
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Quantiles{Count: len(s), P50: at(0.50), P99: at(0.99), Max: s[len(s)-1]}
}
