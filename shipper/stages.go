package shipper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// The stages of a source, what `ferry status` shows: how far the change
// files got on disk (DiskStages), how far the stream holds them
// (ShippedStages), how far a receiver applied them (the caller fills that in
// from receiver/api's status) and how far each stage is behind the one
// before it (Stages.ComputeLags). Each reading is independent; read the
// downstream stages first, so that every later reading is at least as far
// and no lag comes out negative.

// Stage is how far one stage got in a source: a position in the source's
// change files and the commit time of the last transaction before it.
type Stage struct {
	Segment    uint64    `json:"segment"`
	Offset     int64     `json:"offset"`
	LastCommit time.Time `json:"last_commit,omitzero"`
	// StreamSeq is the stream sequence of the shipped message (shipped only).
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Error is the stage's error for this source, if it reports one.
	Error string `json:"error,omitempty"`
}

// Position returns the stage's position in the change files.
func (p *Stage) Position() format.Position {
	return format.Position{Segment: p.Segment, Offset: p.Offset}
}

// StageLag is how far a stage is behind the one before it. Records and Bytes
// are -1 when unknown (the change files were not at hand to count them in).
type StageLag struct {
	Records int64   `json:"records"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// Error is what stopped the count in the change files between the two
	// positions: often what the stage is stuck on (a corrupt frame).
	Error string `json:"error,omitempty"`
}

// Stages is the status of every stage of one source; a stage not read is
// nil.
type Stages struct {
	Source   string    `json:"source"`
	OnDisk   *Stage    `json:"on_disk,omitempty"`
	Shipped  *Stage    `json:"shipped,omitempty"`
	Applied  *Stage    `json:"applied,omitempty"`
	ShipLag  *StageLag `json:"ship_lag,omitempty"`  // on disk → shipped
	ApplyLag *StageLag `json:"apply_lag,omitempty"` // shipped (or on disk) → applied
}

// DiskStages returns, per source in dir, the end of its last whole frame and
// the commit time of its last transaction or heartbeat. A source whose last
// segment cannot be read has the reason in its Error.
func DiskStages(dir string) (map[string]*Stage, error) {
	segs, err := format.ListSegments(dir, "")
	if err != nil {
		return nil, fmt.Errorf("listing the change files: %w", err)
	}
	out := map[string]*Stage{}
	for i, sf := range segs {
		if i+1 < len(segs) && segs[i+1].Source == sf.Source {
			continue // only the last segment of each source
		}
		p := &Stage{Segment: sf.Segment}
		out[sf.Source] = p
		err := scanFrames(sf.Path, 0, -1, func(end int64, commit int64, _ int, _ bool) {
			p.Offset = end
			if commit > 0 {
				p.LastCommit = time.Unix(0, commit).UTC()
			}
		})
		if err != nil {
			p.Error = err.Error()
		}
	}
	return out, nil
}

// scanFrames reads the segment at path from offset from up to offset to
// (-1: its end) and calls fn with the end offset, frame time and change
// count of every frame, and first (header true) with the end of the header
// when from is 0. A torn tail ends the scan quietly.
func scanFrames(path string, from, to int64, fn func(end, commit int64, changes int, header bool)) error {
	rd, f, err := format.OpenReader(path, from)
	if err != nil {
		return err
	}
	defer f.Close()
	if from == 0 {
		fn(rd.End(), 0, 0, true)
	}
	var tx format.Tx
	for to < 0 || rd.End() < to {
		fr, err := rd.Next()
		if err == io.EOF || errors.Is(err, format.ErrTornTail) {
			return nil
		}
		if err != nil {
			return err
		}
		n := 0
		if fr.Type == format.FrameTx && format.DecodeTx(fr.Payload, &tx) == nil {
			n = len(tx.Changes)
		}
		fn(rd.End(), format.FrameTime(fr), n, false)
	}
	return nil
}

// ShippedStages reads, per source, the last message of its subject in
// stream and the position its wire headers name (wire.Batch.End: a split
// frame is shipped once its last part is). A source whose last message
// cannot be read or parsed has the reason in its Error.
func ShippedStages(ctx context.Context, js jetstream.JetStream, stream, prefix string) (map[string]*Stage, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("looking up stream %q: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("reading stream %q's subjects: %w", stream, err)
	}
	out := map[string]*Stage{}
	for subj := range info.State.Subjects {
		src, ok := strings.CutPrefix(subj, prefix+".")
		if !ok || !format.ValidSource(src) {
			continue
		}
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			out[src] = &Stage{Error: fmt.Sprintf("reading the last message of %s: %v", subj, err)}
			continue
		}
		b, err := wire.ParseHeader(m.Header)
		if err != nil {
			out[src] = &Stage{StreamSeq: m.Sequence, Error: fmt.Sprintf("last message of %s (sequence %d): %v", subj, m.Sequence, err)}
			continue
		}
		end := b.End()
		p := &Stage{Segment: end.Segment, Offset: end.Offset, StreamSeq: m.Sequence}
		if b.LastCommit > 0 {
			p.LastCommit = time.Unix(0, b.LastCommit).UTC()
		}
		out[src] = p
	}
	return out, nil
}

// MergeStages joins per-source readings of the stages (any may be nil) into
// one Stages per source, ordered by source name, with their lags computed
// (ComputeLags; records and bytes counted in dir when it is not empty).
func MergeStages(dir string, onDisk, shipped, applied map[string]*Stage) []*Stages {
	st := map[string]*Stages{}
	get := func(src string) *Stages {
		if st[src] == nil {
			st[src] = &Stages{Source: src}
		}
		return st[src]
	}
	for src, p := range applied {
		get(src).Applied = p
	}
	for src, p := range shipped {
		get(src).Shipped = p
	}
	for src, p := range onDisk {
		get(src).OnDisk = p
	}
	out := make([]*Stages, 0, len(st))
	for _, s := range st {
		s.ComputeLags(dir)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// ComputeLags fills the lags from the positions: on disk → shipped, and
// shipped (or, without a shipped reading, on disk) → applied. Seconds are
// the difference of the stages' last commit times; records and bytes are
// counted in the change files in dir when it is not empty, else -1.
func (s *Stages) ComputeLags(dir string) {
	lag := func(ahead, behind *Stage) *StageLag {
		l := &StageLag{Records: -1, Bytes: -1}
		if !ahead.LastCommit.IsZero() && !behind.LastCommit.IsZero() {
			l.Seconds = max(0, ahead.LastCommit.Sub(behind.LastCommit).Seconds())
		}
		if dir != "" && ahead.Error == "" && behind.Error == "" {
			var err error
			if l.Records, l.Bytes, err = CountBetween(dir, s.Source, behind.Position(), ahead.Position()); err != nil {
				l.Records, l.Bytes, l.Error = -1, -1, err.Error()
			}
		}
		return l
	}
	if s.OnDisk != nil && s.Shipped != nil {
		s.ShipLag = lag(s.OnDisk, s.Shipped)
	}
	switch {
	case s.Applied != nil && s.Shipped != nil:
		s.ApplyLag = lag(s.Shipped, s.Applied)
	case s.Applied != nil && s.OnDisk != nil:
		s.ApplyLag = lag(s.OnDisk, s.Applied)
	}
}

// CountBetween counts the changes and bytes of source's change files in dir
// from position from to position to. It fails if the files do not cover
// them whole.
func CountBetween(dir, source string, from, to format.Position) (records, bytes int64, err error) {
	if !from.Less(to) {
		return 0, 0, nil
	}
	segs, err := format.ListSegments(dir, source)
	if err != nil {
		return 0, 0, err
	}
	for _, sf := range segs {
		if sf.Segment < from.Segment || sf.Segment > to.Segment {
			continue
		}
		start, end := int64(0), int64(-1)
		if sf.Segment == from.Segment {
			start = from.Offset
		}
		if sf.Segment == to.Segment {
			end = to.Offset
		}
		last := start
		err := scanFrames(sf.Path, start, end, func(e, _ int64, n int, header bool) {
			if header {
				last = e // a position at 0 means the first frame
				return
			}
			if e > last {
				bytes += e - max(last, start)
				last = e
			}
			records += int64(n)
		})
		if err != nil {
			return records, bytes, err
		}
	}
	return records, bytes, nil
}
