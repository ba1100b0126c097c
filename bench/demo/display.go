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
	if !d.tty {
		sb, sl := behind(s.Written, s.Shipped)
		ab, al := behind(s.Shipped, s.Applied)
		fmt.Fprintf(d.w, "%6.1fs written %d (%s/s) shipped %d (behind %d, %s) applied %d (behind %d, %s) compression %.1fx%s\n",
			s.Elapsed.Seconds(), s.Written.Changes, num(s.Rate[0]), s.Shipped.Changes, sb, ms(sl), s.Applied.Changes, ab, ms(al), s.Ratio(), latencyText(s.Latency))
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
	line("%-9s %14s %12s %14s %10s", "stage", "changes", "changes/s", "behind", "lag")
	line("%-9s %14d %12s %14s %10s", "written", s.Written.Changes, num(s.Rate[0]), "", "")
	sb, sl := behind(s.Written, s.Shipped)
	line("%-9s %14d %12s %14d %10s", "shipped", s.Shipped.Changes, num(s.Rate[1]), sb, ms(sl))
	ab, al := behind(s.Shipped, s.Applied)
	line("%-9s %14d %12s %14d %10s", "applied", s.Applied.Changes, num(s.Rate[2]), ab, ms(al))
	line("compression %.1fx (%s of change files → %s on the stream)", s.Ratio(), mib(s.Shipped.Bytes), mib(s.Wire))
	line("commit→applied%s", latencyText(s.Latency))
	d.lines = 7
	io.WriteString(d.w, b.String())
}

// note prints a message between readings; on a terminal the next reading
// is drawn below it.
func (d *display) note(f string, args ...any) {
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
