//go:build !lean

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/format/wire/natsconn"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/load"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func runLoad(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && args[0] == "mark" {
		return runLoadMark(ctx, env, args[1:])
	}
	fs := flag.NewFlagSet("ferry load", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	nf := addNATSFlags(fs, "ferry load")
	var tables, keys, versions, numeric listFlag
	fs.Var(&tables, "table", "table to load (repeatable, or a comma list); for PostgreSQL optionally schema.table")
	fs.Var(&keys, "key", "key columns COL[,COL...] (default: the primary key; dumps need it); with several tables TABLE=COL[,COL...] (repeatable)")
	fs.Var(&versions, "version-column", "row version column COL, or TABLE=COL (repeatable; format/SPEC.md, Row versions)")
	fs.Var(&numeric, "numeric", "CSV: columns whose fields are numbers in the row image (repeatable or comma list)")
	var (
		pgURL     = fs.String("pg", "", "PostgreSQL URL to read the tables from")
		jsonl     = fs.String("jsonl", "", "JSON lines dump to load (one object per line), with --table and --key")
		csvFile   = fs.String("csv", "", "CSV dump to load (header line first), with --table and --key")
		from      = fs.String("from", "", "re-load keys from K[,K...] on (inclusive; one table)")
		to        = fs.String("to", "", "re-load keys up to K[,K...] (inclusive; one table)")
		keySep    = fs.String("key-sep", "/", "joins the key columns into the change files' key (as the legacy does)")
		mark      = fs.String("mark", "", "dumps: the stream sequence `ferry load mark` printed before the dump was taken")
		chunkRows = fs.Int("chunk-rows", load.DefaultChunkRows, "rows per chunk (one snapshot each)")
		msgBytes  = fs.Int("message-bytes", load.DefaultMessageBytes, "raw bytes per message (at most the server's max_payload less headers)")
		codec     = fs.String("codec", "zstd", "message compression: zstd, s2 or none")
		loadID    = fs.String("load-id", "", "name of the load (default: derived from the table and arguments, so a rerun resumes)")
		reload    = fs.Bool("reload", false, "send the table again even if the last load with these arguments is done")
		stream    = fs.String("stream", wire.DefaultStream, "JetStream stream name")
		prefix    = fs.String("subject-prefix", wire.DefaultSubjectPrefix, "subject prefix: loads go to <prefix>.load.<table>")
		progress  = fs.String("progress", "auto", "progress display: auto (a bar on a terminal, lines otherwise), bar, lines or none")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "log format: text or json")
	)
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry load --pg URL --table T[,T...] [--key COL,...] [--version-column COL] [flags]")
		fmt.Fprintln(env.Stderr, "       ferry load --jsonl FILE | --csv FILE --table T --key COL[,COL...] --mark N [flags]")
		fmt.Fprintln(env.Stderr, "       ferry load mark [NATS flags]    print the stream sequence to take a dump after")
		fmt.Fprintln(env.Stderr, "\nSends a legacy table's existing rows into the change stream in key-ordered chunks, with")
		fmt.Fprintln(env.Stderr, "a consistent cut against the live changes (format/SPEC.md, Initial load). Killed, rerun with")
		fmt.Fprintln(env.Stderr, "the same arguments it resumes after the last chunk the stream holds; once done, a rerun does")
		fmt.Fprintln(env.Stderr, "nothing (--reload sends again). Exit 0 when every table is loaded.")
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	usage := func(format string, a ...any) error {
		return &exitError{code: 2, err: fmt.Errorf("ferry load: "+format, a...)}
	}
	log, err := newLogger(env, *logLevel, *logFormat)
	if err != nil {
		return usage("%v", err)
	}
	tbls, err := load.ParseTables(tables, keys, versions, *from, *to, *keySep)
	if err != nil {
		return usage("%v", err)
	}
	c, err := wire.ParseCodec(*codec)
	if err != nil {
		return usage("--codec: %v", err)
	}
	var nums []string
	for _, n := range numeric {
		nums = append(nums, strings.Split(n, ",")...)
	}
	cfg := load.Config{Prefix: *prefix, ChunkRows: *chunkRows, MessageBytes: *msgBytes, LoadID: *loadID, Reload: *reload,
		Numeric: nums, Log: log}.WithCodec(c)
	if *mark != "" {
		if cfg.Mark, err = strconv.ParseUint(*mark, 10, 64); err != nil {
			return usage("--mark %q: want the number `ferry load mark` printed", *mark)
		}
		cfg.HasMark = true
	}
	if *loadID != "" && len(tbls) > 1 {
		return usage("--load-id with several tables: load one table at a time")
	}
	switch *progress {
	case "auto":
		cfg.Progress = load.ProgressPrinter(env.Stderr, isTerminal(env.Stderr), 5*time.Second)
	case "bar", "lines":
		cfg.Progress = load.ProgressPrinter(env.Stderr, *progress == "bar", 5*time.Second)
	case "none":
	default:
		return usage("--progress %q: want auto, bar, lines or none", *progress)
	}
	in := load.Input{PG: *pgURL, JSONL: *jsonl, CSV: *csvFile}

	nc, ctx, err := natsconn.Dial(ctx, withLogger(nf, log))
	if err != nil {
		return fmt.Errorf("ferry load: %w", err)
	}
	defer nc.Close()
	st, err := load.OpenJetStream(ctx, nc.Conn, jsclient.Config{Stream: *stream, Prefix: *prefix}, 0)
	if err != nil {
		return fmt.Errorf("ferry load: %w", err)
	}
	for _, t := range tbls {
		res, err := load.Run(ctx, st, in, t, cfg)
		if lost := natsconn.Lost(ctx); lost != nil {
			return fmt.Errorf("ferry load: %w", lost)
		}
		if errors.Is(err, load.ErrInput) {
			return usage("%v", err)
		}
		if err != nil {
			return fmt.Errorf("ferry load: table %s: %w (rerun the same command to resume)", t.Name, err)
		}
		switch {
		case res.AlreadyDone:
			fmt.Fprintf(env.Stdout, "%s: already loaded by load %s (%d rows); --reload sends it again\n", t.Name, res.Load, res.Total)
		default:
			how := "loaded"
			if res.Resumed {
				how = "resumed and loaded"
			}
			fmt.Fprintf(env.Stdout, "%s: %s by load %s: %d rows sent (%d in all) in %d messages, %s\n",
				t.Name, how, res.Load, res.Rows, res.Total, res.Messages, res.Elapsed.Round(time.Millisecond))
		}
	}
	return nil
}

// runLoadMark prints the stream's last sequence on stdout (for
// `--mark $(ferry load mark)`) and what it is on stderr.
func runLoadMark(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry load mark", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	nf := addNATSFlags(fs, "ferry load mark")
	stream := fs.String("stream", wire.DefaultStream, "JetStream stream name")
	prefix := fs.String("subject-prefix", wire.DefaultSubjectPrefix, "subject prefix")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "Usage: ferry load mark [NATS flags]")
		fmt.Fprintln(env.Stderr, "\nPrints the change stream's last sequence. Take a dump after it, then load the dump with")
		fmt.Fprintln(env.Stderr, "ferry load --jsonl FILE --mark N: changes newer than the mark win over the dump's rows.")
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	nc, ctx, err := natsconn.Dial(ctx, *nf)
	if err != nil {
		return fmt.Errorf("ferry load mark: %w", err)
	}
	defer nc.Close()
	st, err := load.OpenJetStream(ctx, nc.Conn, jsclient.Config{Stream: *stream, Prefix: *prefix}, 0)
	if err != nil {
		return fmt.Errorf("ferry load mark: %w", err)
	}
	m, err := load.ReadMark(ctx, st)
	if err != nil {
		return fmt.Errorf("ferry load mark: %w", err)
	}
	fmt.Fprintln(env.Stdout, m.Seq)
	fmt.Fprintf(env.Stderr, "stream %s: last sequence %d at %s; take the dump now, then: ferry load --jsonl FILE --table T --key COL --mark %d\n",
		*stream, m.Seq, m.Time.Format(time.RFC3339), m.Seq)
	return nil
}
