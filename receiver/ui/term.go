package ui

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

// The cockpit's figures as text, for `ferry status --watch` on hosts without
// a browser: the gate, and per source the stages with their lag and rate,
// redrawn in place.

// TermStage is one stage of a source (on disk, shipped or applied) as the
// terminal shows it.
type TermStage struct {
	Name string
	// Known is false for a stage that was not read (no --dir, --nats or
	// --receiver given for it).
	Known      bool
	Segment    uint64
	Offset     int64
	LastCommit time.Time
	Error      string
	// Lag behind the stage before it; HasLag is false for the first stage
	// read. Records and Bytes are -1 when unknown.
	HasLag     bool
	LagRecords int64
	LagBytes   int64
	LagSeconds float64
	LagError   string
}

// TermSource is one source and its stages, upstream first.
type TermSource struct {
	Source string
	Stages []TermStage
}

// TermGate is a receiver's readiness gate.
type TermGate struct {
	Ready  bool
	Reason string
}

// TermFrame is one reading of every stage.
type TermFrame struct {
	At      time.Time
	Sources []TermSource
	// Gate is nil when no receiver was read.
	Gate *TermGate
	// Loads are the receiver's initial loads (its status's "loads").
	Loads []api.LoadStatus
	// Err is why this reading failed (the previous figures stay on screen).
	Err error
}

// TermOptions are how WriteTerm draws.
type TermOptions struct {
	// Interval is the time between readings, shown in the header.
	Interval time.Duration
	// Redraw starts the frame by moving the cursor home and clearing the
	// screen (ANSI), so that each frame replaces the last one.
	Redraw bool
	// Color marks the gate and errors in red and green (ANSI).
	Color bool
}

const (
	ansiHomeClear = "\x1b[H\x1b[2J"
	ansiRed       = "\x1b[1;31m"
	ansiGreen     = "\x1b[1;32m"
	ansiReset     = "\x1b[0m"
)

// WriteTerm writes cur; prev (the reading before, or nil) gives each
// stage's rate: how fast its position moved, in bytes per second, when it
// stayed in one segment.
func WriteTerm(w io.Writer, cur TermFrame, prev *TermFrame, o TermOptions) error {
	var b strings.Builder
	paint := func(color, s string) string {
		if !o.Color {
			return s
		}
		return color + s + ansiReset
	}
	if o.Redraw {
		b.WriteString(ansiHomeClear)
	}
	fmt.Fprintf(&b, "ferry status  %s UTC", cur.At.UTC().Format("15:04:05"))
	if o.Interval > 0 {
		fmt.Fprintf(&b, ", every %s (Ctrl-C to stop)", o.Interval)
	}
	b.WriteString("\n")
	if cur.Err != nil {
		fmt.Fprintf(&b, "%s\n", paint(ansiRed, "reading failed: "+cur.Err.Error()))
	}
	if g := cur.Gate; g != nil {
		if g.Ready {
			fmt.Fprintf(&b, "gate: %s\n", paint(ansiGreen, "READY"))
		} else {
			fmt.Fprintf(&b, "gate: %s  %s\n", paint(ansiRed, "NOT READY"), g.Reason)
		}
	}
	b.WriteString("\n")
	if len(cur.Loads) > 0 {
		writeLoads(&b, cur.Loads, paint)
		b.WriteString("\n")
	}
	if len(cur.Sources) == 0 {
		b.WriteString("no sources found\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	var dt float64
	if prev != nil {
		dt = cur.At.Sub(prev.At).Seconds()
	}
	before := func(src string, i int) (TermStage, bool) {
		if prev == nil {
			return TermStage{}, false
		}
		for _, s := range prev.Sources {
			if s.Source == src && i < len(s.Stages) && s.Stages[i].Known {
				return s.Stages[i], true
			}
		}
		return TermStage{}, false
	}
	var notes []string
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tSTAGE\tPOSITION\tLAST COMMIT\tBEHIND records\tbytes\tseconds\tRATE\t")
	for _, src := range cur.Sources {
		name := src.Source
		for i, st := range src.Stages {
			if !st.Known {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t\t\t\t\t\n", name, st.Name)
				name = ""
				continue
			}
			commit := "-"
			if !st.LastCommit.IsZero() {
				commit = st.LastCommit.UTC().Format("15:04:05.000")
			}
			recs, bytes, secs := "", "", ""
			if st.HasLag {
				recs, bytes, secs = count(st.LagRecords), count(st.LagBytes), fmt.Sprintf("%.3f", st.LagSeconds)
			}
			rate := ""
			if p, ok := before(src.Source, i); ok && dt > 0 && p.Segment == st.Segment && st.Offset >= p.Offset {
				rate = size(float64(st.Offset-p.Offset)/dt) + "/s"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d:%d\t%s\t%s\t%s\t%s\t%s\t\n", name, st.Name, st.Segment, st.Offset, commit, recs, bytes, secs, rate)
			name = ""
			if st.Error != "" {
				notes = append(notes, paint(ansiRed, fmt.Sprintf("%s %s: %s", src.Source, st.Name, st.Error)))
			}
			if st.LagError != "" {
				notes = append(notes, paint(ansiRed, fmt.Sprintf("%s %s stuck before: %s", src.Source, st.Name, st.LagError)))
			}
		}
	}
	tw.Flush()
	if len(notes) > 0 {
		b.WriteString("\n")
		for _, n := range notes {
			b.WriteString(n + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteLoads writes a receiver's initial loads as a table: per table the
// load, its state, rows so far of the estimate, rows/s and ETA; failures
// with their reason below it.
func WriteLoads(w io.Writer, loads []api.LoadStatus) error {
	var b strings.Builder
	writeLoads(&b, loads, func(_, s string) string { return s })
	_, err := io.WriteString(w, b.String())
	return err
}

func writeLoads(b *strings.Builder, loads []api.LoadStatus, paint func(color, s string) string) {
	tw := tabwriter.NewWriter(b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LOAD TABLE	ID	STATE	ROWS	OF ~	ROWS/S	ETA	DROPPED	INGESTED	")
	var notes []string
	for _, l := range loads {
		id, est, eta := l.Load, "?", "-"
		if id == "" {
			id = "-"
		}
		if l.RowsEstimate > 0 {
			est = fmt.Sprint(l.RowsEstimate)
		}
		if l.ETASeconds > 0 {
			eta = (time.Duration(l.ETASeconds) * time.Second).String()
		}
		state := l.State
		switch state {
		case "done":
			state = paint(ansiGreen, state)
		case "failed":
			state = paint(ansiRed, state)
			notes = append(notes, paint(ansiRed, fmt.Sprintf("load %s of %s failed: %s", l.Load, l.Table, l.Error)))
		}
		if l.Wait && l.State != "done" {
			state += " (gate waits)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.0f\t%s\t%d\t%d\t\n", l.Table, id, state, l.Rows, est, l.RowsPerSecond, eta, l.RowsDropped, l.RowsIngested)
	}
	tw.Flush()
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
}

func count(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

func size(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", n, units[i])
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
