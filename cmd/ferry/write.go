package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/jsonl"
)

const writeUsage = `Usage: ferry write --dir DIR [--source NAME] [--sync none|interval|always] [--max-segment-size SIZE]

Appends changes read from stdin, one JSON object per line, to the change files
of SOURCE in DIR, as transactions:

  {"table":"orders","op":"upsert","key":"42","after":{"total":9.5},"tx":"t1"}

  table        table name (required)
  op           insert, update, upsert or delete (required)
  key          the row's key (required): a JSON string, or a JSON number kept
               exactly as written (42 is stored as the key "42")
  after        the row after the change, any JSON value (required unless
               op is delete; a delete has none)
  before       the row before the change, any JSON value (optional)
  version      the row's version after the change, an integer from 1
               (optional; see format/SPEC.md, "Row versions")
  tx           transaction id, a string or number (optional): consecutive
               lines with the same tx form one transaction; a line without
               tx is a transaction of its own
  origin       who caused the change (optional, the same on every line of a
               transaction)
  commit_time  when the legacy committed: RFC 3339 text or Unix nanoseconds
               (optional, default now; the same on every line of a transaction)

Images are stored as JSON (content type json). Blank lines are skipped. A bad
line stops the command with an error naming the line: nothing of its
transaction is written, every transaction before it is. A summary goes to
stderr. Exit status: 0 success, 1 error, 2 usage.

Flags:
`

// writeFlags are the flags of ferry write.
type writeFlags struct {
	dir, source string
	sync        string
	maxSize     string
	maxAge      time.Duration
}

func runWrite(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry write", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var f writeFlags
	fs.StringVar(&f.dir, "dir", "", "directory of the change files (created if missing)")
	fs.StringVar(&f.source, "source", "legacy", "source name: 1-64 of [A-Za-z0-9_-]")
	fs.StringVar(&f.sync, "sync", "interval", "when to fsync: none, interval (every 100ms) or always (every transaction); the segment is sealed and synced at the end in any case")
	fs.StringVar(&f.maxSize, "max-segment-size", "64MiB", "rotate to a new segment at this size (bytes, or with KiB, MiB, GiB)")
	fs.DurationVar(&f.maxAge, "max-segment-age", format.DefaultMaxSegmentAge, "rotate to a new segment at this age (0: never)")
	fs.String("config", "", "YAML config file (keys named like the flags; or FERRY_CONFIG)")
	fs.Usage = func() {
		fmt.Fprint(env.Stderr, writeUsage)
		fs.PrintDefaults()
	}
	if _, ok, err := parseFlags(fs, env, args, false); !ok {
		return err
	}
	usageErr := func(format string, args ...any) error {
		return &exitError{code: 2, err: fmt.Errorf("ferry write: "+format+" (see ferry write -h)", args...)}
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q: changes are read from stdin", fs.Arg(0))
	case f.dir == "":
		return usageErr("--dir is required")
	case format.CheckSource(f.source) != nil:
		return usageErr("--source: %v", format.CheckSource(f.source))
	}
	policy, err := format.ParseSyncPolicy(f.sync)
	if err != nil {
		return usageErr("--sync: %v", err)
	}
	maxSize, err := parseSize(f.maxSize)
	if err != nil {
		return usageErr("--max-segment-size: %v", err)
	}
	w, err := format.OpenWriter(f.dir, f.source, format.WithSync(policy, 0),
		format.WithMaxSegmentSize(maxSize), format.WithMaxSegmentAge(f.maxAge))
	if err != nil {
		return fmt.Errorf("ferry write: %w", err)
	}
	sum, werr := jsonl.Copy(ctx, env.Stdin, w)
	if werr != nil {
		werr = fmt.Errorf("ferry write: %w", werr)
	}
	cerr := w.Close()
	if werr == nil && cerr != nil {
		werr = fmt.Errorf("ferry write: closing the segment: %w", cerr)
	}
	if cerr != nil && !errors.Is(cerr, format.ErrClosed) && policy != format.SyncAlways {
		// Commit returned before the disk had the frames: none of what it
		// accepted is known to be on disk now that writing failed.
		fmt.Fprintf(env.Stderr, "ferry write: %d transactions, %d changes accepted, but writing them failed (%v): under --sync %s none of them is confirmed on disk; free space or fix the disk, check what arrived with ferry inspect --json %s, and write the rest again\n",
			sum.Txs, sum.Changes, cerr, policy, f.dir)
		return werr
	}
	fmt.Fprintf(env.Stderr, "ferry write: %d transactions, %d changes written to %s (%s)\n",
		sum.Txs, sum.Changes, f.dir, sum.Segments(f.source))
	return werr
}

// parseSize parses a byte size: a number with an optional KiB, MiB or GiB
// (or K, M, G, KB, MB, GB, all powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (want e.g. 65536, 512KiB, 64MiB)", s)
	}
	return n * mult, nil
}
