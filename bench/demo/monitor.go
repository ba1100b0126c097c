package demo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/store"
)

// monitor takes the readings the display shows, and keeps the log of the
// receiver's gate.
type monitor struct {
	leg      *legacy
	stages   *stages
	loads    *loader // nil until the loads start
	dumps    []dump
	obs      *observer
	api      *api.Client // the receiver's, for /readyz as a deployment probes it
	start    time.Time
	duration time.Duration

	prevAt time.Time
	prev   [3]int64
	rate   [3]float64

	gate    GateLog
	done    map[string]bool // tables whose load the receiver finished (done or failed)
	readyAt time.Time       // the first 200 of /readyz
}

// GateLog is what the demo saw of the receiver's gate (GET /readyz, with
// --wait-load for every loaded table), reading after reading. Each reading
// asks /readyz first, then the receiver's loads: a load seen not done then
// was not done when /readyz answered either.
type GateLog struct {
	Readings int
	// ClosedLoading counts 503s while a load was not done at the receiver
	// (the first reading is taken before the loads start); OpenLoading
	// counts 200s then: the gate opened too early, which must not happen.
	ClosedLoading, OpenLoading int
	// ReadyAfter is the time from the start to the first 200; 0: none.
	ReadyAfter time.Duration
	// Final is the reading once everything was applied.
	Final Gate
}

func (m *monitor) read() *Snapshot {
	now := time.Now()
	s := &Snapshot{Elapsed: now.Sub(m.start), Duration: m.duration, Now: now.UnixNano()}
	s.Gate = m.readGate()
	s.Loads, s.LoadsDone = m.readLoads()
	m.logGate(s, now)
	s.Written = Stage{Changes: m.leg.changes.Load(), Bytes: m.leg.bytes.Load(), LastCommit: m.leg.last.Load()}
	s.Shipped, s.Wire = m.stages.shipped()
	s.Applied = m.stages.applied()
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

// readGate asks /readyz.
func (m *monitor) readGate() Gate {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ok map[string]string
	err := m.api.Get(ctx, "/readyz", nil, &ok)
	var ae *api.Error
	switch {
	case err == nil:
		return Gate{Ready: true}
	case errors.As(err, &ae) && ae.StatusCode == http.StatusServiceUnavailable:
		return Gate{Reason: ae.Message}
	}
	return Gate{Reason: fmt.Sprintf("GET /readyz: %v", err)}
}

// readLoads joins the receiver's view of each load (what the gate waits
// for) with its loader's progress.
func (m *monitor) readLoads() ([]TableLoad, bool) {
	var out []TableLoad
	all := true
	for _, l := range m.stages.recv.Status().Loads {
		if !l.Wait {
			continue
		}
		t := TableLoad{Table: l.Table, Load: l.Load, State: l.State, Error: l.Error, Rows: l.Rows, Estimate: l.RowsEstimate,
			Dropped: l.RowsDropped, RowsPerSecond: l.RowsPerSecond, ETA: time.Duration(l.ETASeconds * float64(time.Second)), Sent: -1}
		if l.State == store.LoadDone && l.UpdatedAt != nil {
			t.DoneAfter = l.UpdatedAt.Sub(m.start)
		}
		if m.loads != nil {
			if p, ok := m.loads.sent(l.Table); ok {
				t.Sent = p.Rows
			}
		}
		if t.Estimate == 0 {
			// No begin applied yet: the dump's size.
			for _, d := range m.dumps {
				if d.table == l.Table {
					t.Estimate = uint64(d.rows)
				}
			}
		}
		all = all && l.State == store.LoadDone
		out = append(out, t)
	}
	return out, all && len(out) > 0
}

// logGate records the reading in the gate's log and notes what changed:
// a load done, the gate opened.
func (m *monitor) logGate(s *Snapshot, now time.Time) {
	m.gate.Readings++
	switch {
	case !s.LoadsDone && s.Gate.Ready:
		m.gate.OpenLoading++
		s.Events = append(s.Events, "The receiver's gate opened before its loads were done (/readyz 200)!")
	case !s.LoadsDone:
		m.gate.ClosedLoading++
	}
	for _, l := range s.Loads {
		if l.State == store.LoadFailed && !m.done[l.Table] {
			m.done[l.Table] = true // said once; the run fails when its loader returns
			s.Events = append(s.Events, fmt.Sprintf("Load %s of %s failed at the receiver: %s", l.Load, l.Table, l.Error))
			continue
		}
		if l.State != store.LoadDone || m.done[l.Table] {
			continue
		}
		m.done[l.Table] = true
		s.Events = append(s.Events, fmt.Sprintf("Load of %s done at the receiver %.1f s after the start: %d rows, %d dropped (a newer live change had the key).",
			l.Table, l.DoneAfter.Seconds(), l.Rows, l.Dropped))
	}
	if s.Gate.Ready && m.readyAt.IsZero() {
		m.readyAt = now
		m.gate.ReadyAfter = now.Sub(m.start)
		s.Events = append(s.Events, fmt.Sprintf("The receiver turned ready %.1f s after the start: /readyz 200 (every load done, lag under the ready lag).",
			s.Elapsed.Seconds()))
	}
}
