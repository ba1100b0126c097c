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
	if !m.prevAt.IsZero() {
		dt := now.Sub(m.prevAt).Seconds()
		for i := range cur {
			s.Rate[i] = float64(cur[i]-m.prev[i]) / dt
		}
	}
	m.prevAt, m.prev = now, cur
	if m.obs != nil && m.obs.lat != nil {
		s.Latency = m.obs.lat.quantiles()
	}
	return s
}
