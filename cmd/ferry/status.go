package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/format/wire/natsconn"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/ui"
	"github.com/ferrysync/ferry/shipper"
	"github.com/nats-io/nats.go/jetstream"
)

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
	read := func(ctx context.Context) ([]*shipper.Stages, *api.Status, error) {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return readStatus(ctx, client, natsSet, nf, *stream, *prefix, *dir)
	}
	if *watch {
		return watchStatus(ctx, env.Stdout, read, *interval, isTerminal(env.Stdout))
	}
	out, rs, err := read(ctx)
	if err != nil {
		return err
	}
	var loads []api.LoadStatus
	if rs != nil {
		loads = rs.Loads
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		doc := map[string]any{"sources": out}
		if rs != nil {
			doc["loads"] = loads
			if rs.DiskFull {
				doc["receiver_disk_full"] = rs.Error
			}
		}
		return enc.Encode(doc)
	}
	printStatus(env.Stdout, out)
	if rs != nil && rs.DiskFull {
		// Every source is paused: said once, not per source.
		fmt.Fprintf(env.Stdout, "\nreceiver: DISK FULL, applying paused: %s\n", rs.Error)
	}
	if len(loads) > 0 {
		// The receiver's initial loads (ferry load): the gate waits for
		// those named by --wait-load.
		fmt.Fprintln(env.Stdout)
		return ui.WriteLoads(env.Stdout, loads)
	}
	return nil
}

// readStatus reads every stage asked for: the receiver's applied positions
// (and its status, returned for the gate) when client is set, the stream's
// when readNATS, the change files' when dir is set.
func readStatus(ctx context.Context, client *api.Client, readNATS bool, nf *natsconn.Config, stream, prefix, dir string) ([]*shipper.Stages, *api.Status, error) {
	var rs *api.Status
	var applied, shipped, disk map[string]*shipper.Stage
	// Read the stages downstream first: each later reading is then at
	// least as far as the one before it, so lags are never negative.
	if client != nil {
		a, status, err := appliedStatus(ctx, client)
		if err != nil {
			return nil, nil, err
		}
		applied, rs = a, &status
	}
	if readNATS {
		nc, err := natsconn.DialOnce(*nf, 0)
		if err != nil {
			return nil, rs, fmt.Errorf("ferry status: %w", err)
		}
		js, err := jetstream.New(nc)
		if err == nil {
			shipped, err = shipper.ShippedStages(ctx, js, stream, prefix)
		}
		nc.Close()
		if err != nil {
			return nil, rs, fmt.Errorf("ferry status: %w (check --stream, or ship something first)", err)
		}
	}
	if dir != "" {
		var err error
		if disk, err = shipper.DiskStages(dir); err != nil {
			return nil, rs, fmt.Errorf("ferry status: %w (check --dir)", err)
		}
	}
	return shipper.MergeStages(dir, disk, shipped, applied), rs, nil
}

// appliedStatus reads a receiver's applied positions through its API's
// client (the status document is the receiver's own type, api.Status).
func appliedStatus(ctx context.Context, c *api.Client) (map[string]*shipper.Stage, api.Status, error) {
	rs, err := c.Status(ctx)
	if err != nil {
		return nil, rs, fmt.Errorf("ferry status: %w (check --receiver and that ferry receive runs)", err)
	}
	out := map[string]*shipper.Stage{}
	for _, s := range rs.Sources {
		p := &shipper.Stage{Segment: s.AppliedSegment, Offset: s.AppliedOffset, Error: s.Error}
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

func printStatus(w io.Writer, out []*shipper.Stages) {
	if len(out) == 0 {
		fmt.Fprintln(w, "no sources found")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tSTAGE\tPOSITION\tLAST COMMIT\tBEHIND (records)\tBEHIND (bytes)\tBEHIND (s)\t")
	row := func(src, stage string, p *shipper.Stage, l *shipper.StageLag) {
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
