package bench

import (
	"slices"
	"sync"
	"time"
)

// latencies matches commit times (recorded by the legacy workers) with the
// times the same transactions became visible downstream, by transaction
// version. Either side may come first.
type latencies struct {
	mu        sync.Mutex
	committed map[int64]int64 // version -> commit ns, not yet seen
	early     map[int64]int64 // version -> visible ns, seen before its commit was recorded
	samples   []time.Duration
}

func newLatencies() *latencies {
	return &latencies{committed: map[int64]int64{}, early: map[int64]int64{}}
}

// commit records a transaction's commit time.
func (l *latencies) commit(version, ns int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.early[version]; ok {
		delete(l.early, version)
		l.samples = append(l.samples, time.Duration(max(0, v-ns)))
		return
	}
	l.committed[version] = ns
}

// visible records that a transaction became visible at ns; only its first
// sighting counts. Versions never committed while recording are ignored
// when the recording ends.
func (l *latencies) visible(version, ns int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.committed[version]; ok {
		delete(l.committed, version)
		l.samples = append(l.samples, time.Duration(max(0, ns-c)))
		return
	}
	if _, ok := l.early[version]; !ok {
		l.early[version] = ns
	}
}

// summary returns the percentiles of the samples and how many committed
// transactions were never seen.
func (l *latencies) summary() Latency {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.samples)
	slices.Sort(s)
	lat := Latency{Samples: len(s), Unseen: len(l.committed)}
	if len(s) == 0 {
		return lat
	}
	q := func(p float64) float64 {
		i := int(p*float64(len(s))+0.5) - 1
		i = min(max(i, 0), len(s)-1)
		return ms(s[i])
	}
	lat.P50, lat.P95, lat.P99, lat.Max = q(0.50), q(0.95), q(0.99), ms(s[len(s)-1])
	return lat
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
