package demo

import "time"

// monitor takes the readings the display shows.
type monitor struct {
	leg      *legacy
	stages   *stages
	obs      *observer
	start    time.Time
	duration time.Duration
	base     int64 // changes of the initial load, not shown

	prevAt time.Time
	prev   [3]int64
	rate   [3]float64
}

func (m *monitor) read() *Snapshot {
	now := time.Now()
	s := &Snapshot{Elapsed: now.Sub(m.start), Duration: m.duration, Now: now.UnixNano()}
	s.Written = Stage{Changes: m.leg.changes.Load(), Bytes: m.leg.bytes.Load(), LastCommit: m.leg.last.Load()}
	s.Shipped, s.Wire = m.stages.shipped()
	s.Applied = m.stages.applied()
	s.Written.Changes -= m.base
	s.Shipped.Changes -= m.base
	s.Applied.Changes -= m.base
	cur := [3]int64{s.Written.Changes, s.Shipped.Changes, s.Applied.Changes}
	// Rates over at least 200 ms, or the last ones again.
	if dt := now.Sub(m.prevAt); m.prevAt.IsZero() || dt >= 200*time.Millisecond {
		if !m.prevAt.IsZero() {
			for i := range cur {
				m.rate[i] = float64(cur[i]-m.prev[i]) / dt.Seconds()
			}
		}
		m.prevAt, m.prev = now, cur
	}
	s.Rate = m.rate
	if m.obs != nil && m.obs.lat != nil {
		s.Latency = m.obs.lat.quantiles()
	}
	return s
}
