package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/format/wire/natsconn"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stagePos is how far one stage got in a source: a position in the source's
// change files and the commit time of the last transaction before it.
type stagePos struct {
	Segment    uint64    `json:"segment"`
	Offset     int64     `json:"offset"`
	LastCommit time.Time `json:"last_commit,omitzero"`
	// StreamSeq is the stream sequence of the shipped message (shipped only).
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Error is the stage's error for this source, if it reports one.
	Error string `json:"error,omitempty"`
}

func (p *stagePos) pos() format.Position {
	return format.Position{Segment: p.Segment, Offset: p.Offset}
}

// stageLag is how far a stage is behind the one before it. Records and
// Bytes are -1 when unknown (no --dir to count them in).
type stageLag struct {
	Records int64   `json:"records"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// Error is what stopped the count in the change files between the two
	// positions: often what the stage is stuck on (a corrupt frame).
	Error string `json:"error,omitempty"`
}

// sourceStatus is the status of every stage of one source.
type sourceStatus struct {
	Source   string    `json:"source"`
	OnDisk   *stagePos `json:"on_disk,omitempty"`
	Shipped  *stagePos `json:"shipped,omitempty"`
	Applied  *stagePos `json:"applied,omitempty"`
	ShipLag  *stageLag `json:"ship_lag,omitempty"`  // on disk → shipped
	ApplyLag *stageLag `json:"apply_lag,omitempty"` // shipped (or on disk) → applied
}

func runStatus(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry status", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	dir := fs.String("dir", "", "directory of the change files (the on-disk stage)")
	stream := fs.String("stream", wire.DefaultStream, "JetStream stream name")
	prefix := fs.String("subject-prefix", wire.DefaultSubjectPrefix, "subject prefix: source S is on <prefix>.S")
	receiverURL := fs.String("receiver", "", "base URL of a receiver's HTTP API, e.g. http://127.0.0.1:8080 (http:// may be left out)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for NATS and the receiver")
	watch := fs.Bool("watch", false, "redraw the figures every --interval until Ctrl-C (for hosts without a browser; the receiver's /ui/ shows them too)")
	interval := fs.Duration("interval", 2*time.Second, "time between readings with --watch")
	fs.String("config", "", "YAML config file (keys named like the flags; or FERRY_CONFIG)")
	nf := addNATSFlags(fs, "ferry status")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry status [--dir DIR] [--nats URL --stream NAME] [--receiver http://HOST:PORT] [--json | --watch [--interval 2s]]")
		fmt.Fprintln(env.Stderr, "\nShows how far each stage (on disk, shipped, applied) got in every source and how far behind it is.")
		fmt.Fprintln(env.Stderr, "Without --dir, --nats or --receiver it reads the stream at --nats's default. A receiver that")
		fmt.Fprintln(env.Stderr, "requires a token gets it from FERRY_RECEIVER_TOKEN.")
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	natsSet := false
	fs.Visit(func(f *flag.Flag) { natsSet = natsSet || f.Name == "nats" })
	if env.Getenv("FERRY_NATS") != "" {
		natsSet = true
	}
	if *dir == "" && !natsSet && *receiverURL == "" {
		// Nothing asked for: the stream at --nats's default, as its
		// usage line shows.
		natsSet = true
	}
	if *watch && *asJSON {
		return &exitError{code: 2, err: errors.New("ferry status: --watch and --json do not go together")}
	}
	if *watch && *interval < 100*time.Millisecond {
		return &exitError{code: 2, err: fmt.Errorf("ferry status: --interval %v: want at least 100ms", *interval)}
	}
	var client *api.Client
	if *receiverURL != "" {
		var err error
		if client, err = api.NewClient(*receiverURL, env.Getenv("FERRY_RECEIVER_TOKEN"), nil); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("ferry status: --receiver: %w", err)}
		}
	}
	read := func(ctx context.Context) ([]*sourceStatus, *api.Status, error) {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return readStatus(ctx, client, natsSet, nf, *stream, *prefix, *dir)
	}
	if *watch {
		return watchStatus(ctx, env.Stdout, read, *interval, isTerminal(env.Stdout))
	}
	out, _, err := read(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"sources": out})
	}
	printStatus(env.Stdout, out)
	return nil
}

// readStatus reads every stage asked for: the receiver's applied positions
// (and its status, returned for the gate) when client is set, the stream's
// when readNATS, the change files' when dir is set.
func readStatus(ctx context.Context, client *api.Client, readNATS bool, nf *natsconn.Config, stream, prefix, dir string) ([]*sourceStatus, *api.Status, error) {
	var rs *api.Status
	st := map[string]*sourceStatus{}
	get := func(src string) *sourceStatus {
		if st[src] == nil {
			st[src] = &sourceStatus{Source: src}
		}
		return st[src]
	}
	// Read the stages downstream first: each later reading is then at
	// least as far as the one before it, so lags are never negative.
	if client != nil {
		applied, status, err := appliedStatus(ctx, client)
		if err != nil {
			return nil, nil, err
		}
		rs = &status
		for src, p := range applied {
			get(src).Applied = p
		}
	}
	if readNATS {
		nc, err := natsconn.DialOnce(*nf, 0)
		if err != nil {
			return nil, rs, fmt.Errorf("ferry status: %w", err)
		}
		shipped, err := shippedStatus(ctx, nc, stream, prefix)
		nc.Close()
		if err != nil {
			return nil, rs, err
		}
		for src, p := range shipped {
			get(src).Shipped = p
		}
	}
	if dir != "" {
		disk, err := diskStatus(dir)
		if err != nil {
			return nil, rs, err
		}
		for src, p := range disk {
			get(src).OnDisk = p
		}
	}
	out := make([]*sourceStatus, 0, len(st))
	for _, s := range st {
		s.computeLags(dir)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out, rs, nil
}

// diskStatus returns, per source in dir, the end of its last whole frame and
// the commit time of its last transaction or heartbeat.
func diskStatus(dir string) (map[string]*stagePos, error) {
	segs, err := format.ListSegments(dir, "")
	if err != nil {
		return nil, fmt.Errorf("ferry status: %w (check --dir)", err)
	}
	out := map[string]*stagePos{}
	for i, sf := range segs {
		if i+1 < len(segs) && segs[i+1].Source == sf.Source {
			continue // only the last segment of each source
		}
		p := &stagePos{Segment: sf.Segment}
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

// shippedStatus reads, per source, the last message of its subject and the
// position its wire headers name.
func shippedStatus(ctx context.Context, nc *nats.Conn, stream, prefix string) (map[string]*stagePos, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("ferry status: %w", err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("ferry status: looking up stream %q: %w (check --stream, or ship something first)", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("ferry status: reading stream %q's subjects: %w", stream, err)
	}
	out := map[string]*stagePos{}
	for subj := range info.State.Subjects {
		src, ok := strings.CutPrefix(subj, prefix+".")
		if !ok || !format.ValidSource(src) {
			continue
		}
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			out[src] = &stagePos{Error: fmt.Sprintf("reading the last message of %s: %v", subj, err)}
			continue
		}
		b, err := wire.ParseHeader(m.Header)
		if err != nil {
			out[src] = &stagePos{StreamSeq: m.Sequence, Error: fmt.Sprintf("last message of %s (sequence %d): %v", subj, m.Sequence, err)}
			continue
		}
		end := b.End() // a split frame is shipped once its last part is
		p := &stagePos{Segment: end.Segment, Offset: end.Offset, StreamSeq: m.Sequence}
		if b.LastCommit > 0 {
			p.LastCommit = time.Unix(0, b.LastCommit).UTC()
		}
		out[src] = p
	}
	return out, nil
}

// computeLags fills the lags from the positions; records and bytes are
// counted in the change files when dir is known.
func (s *sourceStatus) computeLags(dir string) {
	lag := func(ahead, behind *stagePos) *stageLag {
		l := &stageLag{Records: -1, Bytes: -1}
		if !ahead.LastCommit.IsZero() && !behind.LastCommit.IsZero() {
			l.Seconds = max(0, ahead.LastCommit.Sub(behind.LastCommit).Seconds())
		}
		if dir != "" && ahead.Error == "" && behind.Error == "" {
			var err error
			if l.Records, l.Bytes, err = countBetween(dir, s.Source, behind.pos(), ahead.pos()); err != nil {
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

// countBetween counts the changes and bytes of source's files from position
// from to position to. It fails if the files do not cover them whole.
func countBetween(dir, source string, from, to format.Position) (records, bytes int64, err error) {
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

// appliedStatus reads a receiver's applied positions through its API's
// client (the status document is the receiver's own type, api.Status).
func appliedStatus(ctx context.Context, c *api.Client) (map[string]*stagePos, api.Status, error) {
	rs, err := c.Status(ctx)
	if err != nil {
		return nil, rs, fmt.Errorf("ferry status: %w (check --receiver and that ferry receive runs)", err)
	}
	out := map[string]*stagePos{}
	for _, s := range rs.Sources {
		p := &stagePos{Segment: s.AppliedSegment, Offset: s.AppliedOffset, Error: s.Error}
		if s.Error == "" && s.State == "stopped" {
			p.Error = s.State
		}
		if s.LastCommitTime != nil {
			p.LastCommit = s.LastCommitTime.UTC()
		}
		out[s.Source] = p
	}
	return out, rs, nil
}

func printStatus(w io.Writer, out []*sourceStatus) {
	if len(out) == 0 {
		fmt.Fprintln(w, "no sources found")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tSTAGE\tPOSITION\tLAST COMMIT\tBEHIND (records)\tBEHIND (bytes)\tBEHIND (s)\t")
	row := func(src, stage string, p *stagePos, l *stageLag) {
		if p == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t\n", src, stage)
			return
		}
		pos := fmt.Sprintf("%d:%d", p.Segment, p.Offset)
		commit := "-"
		if !p.LastCommit.IsZero() {
			commit = p.LastCommit.Format("15:04:05.000")
		}
		recs, bytes, secs := "-", "-", "-"
		if l != nil {
			if l.Records >= 0 {
				recs = fmt.Sprint(l.Records)
			}
			if l.Bytes >= 0 {
				bytes = fmt.Sprint(l.Bytes)
			}
			secs = fmt.Sprintf("%.3f", l.Seconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", src, stage, pos, commit, recs, bytes, secs)
		if p.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tERROR: %s\t\t\t\t\t\n", src, stage, p.Error)
		}
		if l != nil && l.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tSTUCK BEFORE: %s\t\t\t\t\t\n", src, stage, l.Error)
		}
	}
	for _, s := range out {
		row(s.Source, "on disk", s.OnDisk, nil)
		row(s.Source, "shipped", s.Shipped, s.ShipLag)
		row(s.Source, "applied", s.Applied, s.ApplyLag)
	}
	tw.Flush()
}
