package main

import (
	"context"
	"io"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/ui"
	"github.com/ferrysync/ferry/shipper"
)

// watchStatus reads the stages every interval and redraws them (ui.WriteTerm)
// until ctx ends; a failed reading is shown and the next one tried. ansi
// clears the screen between frames and colours the gate (a terminal).
func watchStatus(ctx context.Context, w io.Writer, read func(context.Context) ([]*shipper.Stages, *api.Status, error), interval time.Duration, ansi bool) error {
	var prev *ui.TermFrame
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		out, rs, err := read(ctx)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		cur := termFrame(time.Now(), out, rs, err)
		if err := ui.WriteTerm(w, cur, prev, ui.TermOptions{Interval: interval, Redraw: ansi, Color: ansi}); err != nil {
			return err
		}
		if err == nil {
			prev = &cur
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// termFrame maps the status document to what the terminal shows.
func termFrame(at time.Time, out []*shipper.Stages, rs *api.Status, err error) ui.TermFrame {
	f := ui.TermFrame{At: at, Err: err}
	if rs != nil {
		f.Gate = &ui.TermGate{Ready: rs.Ready, Reason: rs.NotReadyReason}
		f.Loads = rs.Loads
	}
	for _, s := range out {
		ts := ui.TermSource{Source: s.Source}
		stage := func(name string, p *shipper.Stage, l *shipper.StageLag) {
			st := ui.TermStage{Name: name, Known: p != nil}
			if p != nil {
				st.Segment, st.Offset, st.LastCommit, st.Error = p.Segment, p.Offset, p.LastCommit, p.Error
			}
			if l != nil {
				st.HasLag, st.LagRecords, st.LagBytes, st.LagSeconds, st.LagError = true, l.Records, l.Bytes, l.Seconds, l.Error
			}
			ts.Stages = append(ts.Stages, st)
		}
		stage("on disk", s.OnDisk, nil)
		stage("shipped", s.Shipped, s.ShipLag)
		stage("applied", s.Applied, s.ApplyLag)
		f.Sources = append(f.Sources, ts)
	}
	return f
}
