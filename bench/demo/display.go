package demo

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Stage is how far one stage got.
type Stage struct {
	Changes    int64
	Bytes      int64 // raw change-file bytes
	LastCommit int64 // commit time of the last transaction, Unix ns
}

// Snapshot is one reading of the demo's figures.
type Snapshot struct {
	Elapsed  time.Duration
	Written  Stage
	Shipped  Stage
	Applied  Stage
	Wire     int64 // compressed bytes published
	Rate     [3]float64
	Latency  Quantiles // commit→applied over the last interval
	Now      int64
	Duration time.Duration // 0: until Ctrl-C
	// Gate is the receiver's /readyz; Loads its initial loads (those the
	// gate waits for), LoadsDone whether every one is done.
	Gate      Gate
	Loads     []TableLoad
	LoadsDone bool
	// Events happened since the last reading (a load done, the gate
	// opened): printed once, above the figures.
	Events []string
}

// Gate is a reading of the receiver's gate, GET /readyz.
type Gate struct {
	Ready bool
	// Reason is why not: the 503's text, or what failed asking.
	Reason string
}

func (g Gate) String() string {
	if g.Ready {
		return "ready (/readyz 200)"
	}
	return "closed (/readyz 503: " + g.Reason + ")"
}

// TableLoad is one table's initial load: the receiver's view of it (its
// /v1/status loads) and what its loader reported.
type TableLoad struct {
	Table, Load string
	// State at the receiver: waiting (nothing of it seen yet), loading,
	// done or failed.
	State string
	// Error says why the load failed.
	Error string
	// Rows the receiver received (applied and dropped) of Estimate;
	// Dropped those a newer live change of the key had made obsolete.
	Rows, Estimate, Dropped uint64
	// RowsPerSecond and ETA: the receiver's rate over the load so far and
	// the estimate's remaining rows at that rate.
	RowsPerSecond float64
	ETA           time.Duration
	// Sent is the rows the loader had acknowledged (-1: nothing reported).
	Sent int64
	// DoneAfter is when the receiver applied the load's last message, from
	// the start (done loads).
	DoneAfter time.Duration
}

// loadTotals sums the loads' rows received and estimated.
func loadTotals(ls []TableLoad) (rows, estimate uint64) {
	for _, l := range ls {
		rows += l.Rows
		estimate += l.Estimate
	}
	return rows, estimate
}

// behind returns how far stage b is behind stage a, in changes and seconds.
func behind(a, b Stage) (int64, time.Duration) {
	n := max(0, a.Changes-b.Changes)
	if n == 0 || a.LastCommit == 0 || b.LastCommit == 0 {
		return n, 0
	}
	return n, time.Duration(max(0, a.LastCommit-b.LastCommit))
}

// Ratio returns raw bytes over compressed bytes shipped, or 0.
func (s *Snapshot) Ratio() float64 {
	if s.Wire == 0 {
		return 0
	}
	return float64(s.Shipped.Bytes) / float64(s.Wire)
}

// display renders snapshots: redrawn in place on a terminal, one line per
// reading otherwise.
type display struct {
	w     io.Writer
	tty   bool
	lines int // lines drawn last time (tty)
}

func (d *display) show(s *Snapshot) {
	for _, e := range s.Events {
		d.note("%s\n", e)
	}
	if !d.tty {
		sb, sl := behind(s.Written, s.Shipped)
		ab, al := behind(s.Shipped, s.Applied)
		gate := "gate 200"
		if !s.Gate.Ready {
			gate = "gate 503"
		}
		if !s.LoadsDone {
			rows, est := loadTotals(s.Loads)
			gate += fmt.Sprintf(" (loading %d of ~%d rows)", rows, est)
		}
		fmt.Fprintf(d.w, "%6.1fs written %d (%s/s) shipped %d (behind %d, %s) applied %d (behind %d, %s) compression %.1fx %s%s\n",
			s.Elapsed.Seconds(), s.Written.Changes, num(s.Rate[0]), s.Shipped.Changes, sb, ms(sl), s.Applied.Changes, ab, ms(al), s.Ratio(), gate, latencyText(s.Latency))
		return
	}
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.lines)
	}
	line := func(f string, args ...any) {
		b.WriteString("\x1b[2K")
		fmt.Fprintf(&b, f, args...)
		b.WriteByte('\n')
	}
	of := "until Ctrl-C"
	if s.Duration > 0 {
		of = "of " + s.Duration.String()
	}
	line("Ferry demo: %.1f s %s", s.Elapsed.Seconds(), of)
	line("gate      %s", s.Gate)
	line("%-12s %10s %11s %10s %8s %9s  %s", "load", "rows", "of ~", "rows/s", "ETA", "dropped", "state (rows sent)")
	for _, l := range s.Loads {
		eta := ""
		if l.ETA > 0 {
			eta = l.ETA.Round(100 * time.Millisecond).String()
		}
		sent := ""
		if l.Sent >= 0 {
			sent = fmt.Sprintf(" (%d sent)", l.Sent)
		}
		line("%-12s %10d %11d %10s %8s %9d  %s%s", l.Table, l.Rows, l.Estimate, num(l.RowsPerSecond), eta, l.Dropped, l.State, sent)
	}
	line("%-9s %14s %12s %14s %10s", "stage", "changes", "changes/s", "behind", "lag")
	line("%-9s %14d %12s %14s %10s", "written", s.Written.Changes, num(s.Rate[0]), "", "")
	sb, sl := behind(s.Written, s.Shipped)
	line("%-9s %14d %12s %14d %10s", "shipped", s.Shipped.Changes, num(s.Rate[1]), sb, ms(sl))
	ab, al := behind(s.Shipped, s.Applied)
	line("%-9s %14d %12s %14d %10s", "applied", s.Applied.Changes, num(s.Rate[2]), ab, ms(al))
	line("compression %.1fx (%s of change files → %s on the stream)", s.Ratio(), mib(s.Shipped.Bytes), mib(s.Wire))
	line("commit→applied%s", latencyText(s.Latency))
	d.lines = 9 + len(s.Loads)
	io.WriteString(d.w, b.String())
}

// note prints a message between readings; on a terminal it takes the
// place of the last reading, and the next one is drawn below it, so that
// the messages read as a log above the live figures.
func (d *display) note(f string, args ...any) {
	if d.tty && d.lines > 0 {
		fmt.Fprintf(d.w, "\x1b[%dA\x1b[J", d.lines)
	}
	fmt.Fprintf(d.w, f, args...)
	d.lines = 0
}

func latencyText(q Quantiles) string {
	if q.Count == 0 {
		return ""
	}
	return fmt.Sprintf(" latency p50 %s p99 %s (%d tx)", ms(q.P50), ms(q.P99), q.Count)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func num(f float64) string {
	switch {
	case f >= 1e6:
		return fmt.Sprintf("%.2fM", f/1e6)
	case f >= 1e4:
		return fmt.Sprintf("%.1fk", f/1e3)
	}
	return fmt.Sprintf("%.0f", f)
}
