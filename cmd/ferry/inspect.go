package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/jsonl"
)

// Exit statuses of ferry inspect (also in format/SPEC.md).
const (
	inspectExitCorrupt = 3
	inspectExitTorn    = 4
)

const inspectUsage = `Usage: ferry inspect [--verify] [--json] PATH...

Dumps change files: each PATH is a segment file or a directory of them.

  (default)  a human-readable dump of headers, frames and changes
  --json     one JSON object per change, streaming:
             {"table","op","key","after","before","content","tx","origin",
              "commit_time","position":{"source","segment","offset","index"}}
             after/before are JSON when the content type is json (an empty
             image is null), otherwise base64 strings with "content" binary
             or text; a key that is not UTF-8 is "key_base64"; commit_time
             is RFC 3339 with nanoseconds, UTC.
  --verify   check every checksum and the segment chain: seals naming the
             next segment, no gaps in segment numbers, headers matching file
             names. Without --json it prints one line per segment instead of
             the dump.

Exit status:
  0  everything read to its end and (with --verify) the chain checks out
  1  an error not about the data (unreadable path, I/O error)
  2  usage error
  3  corruption: checksum mismatch or malformed data in the middle of a
     segment, bad header, broken chain; the message names file and offset
  4  torn tail and nothing worse: a segment ends with a partial last frame
     (a crashed writer, or one still writing); the message names file and
     offset

Flags:
`

type inspectOpts struct {
	verify, json bool
}

func runInspect(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("ferry inspect", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var o inspectOpts
	fs.BoolVar(&o.verify, "verify", false, "check every checksum and the segment chain; exit 3 on corruption, 4 on a torn tail")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per change")
	fs.Usage = func() {
		fmt.Fprint(env.Stderr, inspectUsage)
		fs.PrintDefaults()
	}
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2, err: errUsageShown}
	}
	if len(paths) == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("ferry inspect: no PATH given (a segment file or a directory)")}
	}
	groups, err := format.GroupSegments(paths)
	if err != nil {
		return fmt.Errorf("ferry inspect: %w", err)
	}
	out := bufio.NewWriterSize(env.Stdout, 1<<20)
	in := newInspector(o, out, env.Stderr)
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := in.v.VerifyChain(g); err != nil {
			out.Flush()
			return fmt.Errorf("ferry inspect: %w", err)
		}
	}
	if o.verify && !o.json {
		fmt.Fprintf(out, "%d segments, %d transactions, %d changes: %s\n", in.v.Segments, in.v.Transactions, in.v.Changes, in.verdict())
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("ferry inspect: writing output: %w", err)
	}
	switch {
	case in.v.Corrupt > 0:
		return &exitError{code: inspectExitCorrupt, err: fmt.Errorf("ferry inspect: %d problem(s) found, first: %v", in.v.Corrupt+in.v.Torn, in.v.First)}
	case in.v.Torn > 0:
		return &exitError{code: inspectExitTorn, err: fmt.Errorf("ferry inspect: %d torn tail(s), first: %v", in.v.Torn, in.v.First)}
	}
	return nil
}

// parseInterspersed parses args with flags before, between and after the
// positional arguments (ferry inspect DIR --verify), which flag.Parse alone
// takes as paths; after "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// inspector prints what format.Verifier finds: a dump of every frame, one
// JSON line per change, or (--verify) one line per segment.
type inspector struct {
	opts   inspectOpts
	out    *bufio.Writer
	stderr io.Writer
	buf    []byte
	v      format.Verifier
}

func newInspector(o inspectOpts, out *bufio.Writer, stderr io.Writer) *inspector {
	in := &inspector{opts: o, out: out, stderr: stderr}
	in.v = format.Verifier{Chain: o.verify, Start: in.start, Frame: in.frame, Problem: in.problem, Done: in.done}
	return in
}

func (in *inspector) human() bool { return !in.opts.verify && !in.opts.json }

func (in *inspector) verdict() string {
	switch {
	case in.v.Corrupt > 0:
		return "CORRUPT"
	case in.v.Torn > 0:
		return "TORN TAIL"
	}
	return "ok"
}

// problem reports a corruption or a torn tail on stderr.
func (in *inspector) problem(_ *format.SegmentResult, p format.Problem) {
	kind := "corrupt"
	if p.Torn {
		kind = "torn tail"
	}
	in.out.Flush()
	fmt.Fprintf(in.stderr, "ferry inspect: %s: %v\n", kind, p.Err)
}

func (in *inspector) start(res *format.SegmentResult) error {
	if in.human() {
		h := res.Header
		fmt.Fprintf(in.out, "== %s  source %s  segment %d  version %d  created %s  header %d bytes\n",
			res.Ref.Path, h.Source, h.Segment, h.Version, fmtTime(h.Created), h.Len)
	}
	return nil
}

// done prints how a segment ended.
func (in *inspector) done(res *format.SegmentResult) error {
	ref := res.Ref
	switch torn := res.Stop != nil && errors.Is(res.Stop, format.ErrTornTail); {
	case res.Stop != nil && !res.HeaderRead && torn:
		in.verifyLine("TORN", ref, "incomplete header")
	case res.Stop != nil && !res.HeaderRead:
		in.verifyLine("CORRUPT", ref, "header: %v", res.Stop.Err)
	case torn:
		in.verifyLine("TORN", ref, "torn tail at offset %d after %d transactions", res.Stop.Offset, res.Transactions)
		if in.human() {
			fmt.Fprintf(in.out, "-- torn tail at offset %d\n", res.Stop.Offset)
		}
	case res.Stop != nil:
		in.verifyLine("CORRUPT", ref, "offset %d: %v", res.Stop.Offset, res.Stop.Err)
	default:
		state := "open: no seal yet"
		if res.Sealed {
			state = fmt.Sprintf("sealed, next segment %d", res.Seal.Next)
		} else if !res.Last {
			state = "abandoned: no seal"
		}
		if !res.Corrupt {
			in.verifyLine("ok", ref, "%s; %d transactions, %d changes, %d bytes", state, res.Transactions, res.Changes, res.End)
		}
		if in.human() {
			fmt.Fprintf(in.out, "-- end at offset %d (%s)\n", res.End, state)
		}
	}
	if res.Abandoned && in.opts.verify && !in.opts.json {
		fmt.Fprintf(in.out, "        %s: abandoned without a seal at offset %d (its writer stopped without closing; nothing is missing)\n", filepath.Base(ref.Path), res.End)
	}
	return nil
}

func (in *inspector) verifyLine(status string, ref format.SegmentRef, f string, args ...any) {
	if in.opts.verify && !in.opts.json {
		fmt.Fprintf(in.out, "%-7s %s: %s\n", status, filepath.Base(ref.Path), fmt.Sprintf(f, args...))
	}
}

// frame dumps one frame.
func (in *inspector) frame(res *format.SegmentResult, vf *format.VerifiedFrame) error {
	human := in.human()
	ref, off, fr := res.Ref, vf.Offset, vf.Frame
	switch {
	case vf.Tx != nil:
		switch {
		case in.opts.json:
			for i := range vf.Tx.Changes {
				in.buf = appendChangeJSON(in.buf[:0], vf.Tx, i, ref.Source, ref.Segment, off)
				if _, err := in.out.Write(in.buf); err != nil {
					return err
				}
			}
		case human:
			in.buf = appendTxHuman(in.buf[:0], vf.Tx, off, len(fr.Payload))
			if _, err := in.out.Write(in.buf); err != nil {
				return err
			}
		}
	case fr.Type == format.FrameSeal:
		if human {
			s, _ := format.DecodeSeal(fr.Payload)
			fmt.Fprintf(in.out, "@%-10d seal      next segment %d, %d transactions, %d changes, sealed %s\n",
				off, s.Next, s.Transactions, s.Changes, fmtTime(s.Time))
		}
	case fr.Type == format.FrameHeartbeat:
		if human {
			t, _ := format.DecodeHeartbeat(fr.Payload)
			fmt.Fprintf(in.out, "@%-10d heartbeat %s\n", off, fmtTime(t))
		}
	case vf.Rejection != nil:
		r := vf.Rejection
		switch {
		case in.opts.json:
			in.buf = append(in.buf[:0], `{"rejected":`...)
			in.buf = jsonl.AppendString(in.buf, r.Command)
			in.buf = append(in.buf, `,"origin":`...)
			in.buf = jsonl.AppendString(in.buf, r.Origin)
			in.buf = append(in.buf, `,"reason":`...)
			in.buf = jsonl.AppendString(in.buf, r.Reason)
			in.buf = fmt.Appendf(in.buf, `,"time":"%s","position":{"source":`, fmtTime(r.Time))
			in.buf = jsonl.AppendString(in.buf, ref.Source)
			in.buf = fmt.Appendf(in.buf, `,"segment":%d,"offset":%d}}`+"\n", ref.Segment, off)
			if _, err := in.out.Write(in.buf); err != nil {
				return err
			}
		case human:
			fmt.Fprintf(in.out, "@%-10d rejection %s, command %q of %q: %s\n", off, fmtTime(r.Time), r.Command, r.Origin, r.Reason)
		}
	case vf.Applied != nil:
		r := vf.Applied
		switch {
		case in.opts.json:
			in.buf = append(in.buf[:0], `{"applied_again":`...)
			in.buf = jsonl.AppendString(in.buf, r.Command)
			in.buf = append(in.buf, `,"origin":`...)
			in.buf = jsonl.AppendString(in.buf, r.Origin)
			in.buf = append(in.buf, `,"tx_id":`...)
			in.buf = jsonl.AppendString(in.buf, r.TxID)
			in.buf = fmt.Appendf(in.buf, `,"version":%d,"time":"%s","position":{"source":`, r.Version, fmtTime(r.Time))
			in.buf = jsonl.AppendString(in.buf, ref.Source)
			in.buf = fmt.Appendf(in.buf, `,"segment":%d,"offset":%d}}`+"\n", ref.Segment, off)
			if _, err := in.out.Write(in.buf); err != nil {
				return err
			}
		case human:
			fmt.Fprintf(in.out, "@%-10d applied   %s, command %q of %q carried out earlier by %q at version %d\n", off, fmtTime(r.Time), r.Command, r.Origin, r.TxID, r.Version)
		}
	case vf.Outcome != nil:
		o := vf.Outcome
		switch {
		case in.opts.json:
			for _, r := range o.Resolutions {
				in.buf = fmt.Appendf(in.buf[:0], `{"outcome":%q,"prepared":{"segment":%d,"offset":%d},"time":"%s","position":{"source":`,
					r.Decision, r.Prepared.Segment, r.Prepared.Offset, fmtTime(o.Time))
				in.buf = jsonl.AppendString(in.buf, ref.Source)
				in.buf = fmt.Appendf(in.buf, `,"segment":%d,"offset":%d}}`+"\n", ref.Segment, off)
				if _, err := in.out.Write(in.buf); err != nil {
					return err
				}
			}
		case human:
			in.buf = fmt.Appendf(in.buf[:0], "@%-10d outcome   %s, %d resolution(s):", off, fmtTime(o.Time), len(o.Resolutions))
			for _, r := range o.Resolutions {
				in.buf = fmt.Appendf(in.buf, " %v %s", r.Prepared, r.Decision)
			}
			if _, err := in.out.Write(append(in.buf, '\n')); err != nil {
				return err
			}
		}
	default:
		if human {
			fmt.Fprintf(in.out, "@%-10d %s  %d bytes (optional frame type, skipped)\n", off, fr.Type, len(fr.Payload))
		}
	}
	return nil
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// appendChangeJSON appends change i of tx as one JSON line.
func appendChangeJSON(b []byte, tx *format.Tx, i int, source string, seg uint64, off int64) []byte {
	c := &tx.Changes[i]
	b = append(b, `{"table":`...)
	b = jsonl.AppendString(b, c.Table)
	b = append(b, `,"op":"`...)
	b = append(b, c.Op.String()...)
	b = append(b, '"')
	if utf8.Valid(c.Key) {
		b = append(b, `,"key":`...)
		b = jsonl.AppendString(b, string(c.Key))
	} else {
		b = append(b, `,"key_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, c.Key)
		b = append(b, '"')
	}
	content := c.Content
	if content == format.ContentJSON && (len(c.After) > 0 && !json.Valid(c.After) || len(c.Before) > 0 && !json.Valid(c.Before)) {
		content = format.ContentBinary // not valid JSON after all: show the bytes
	}
	if len(c.After) > 0 || c.Op != format.OpDelete {
		b = append(b, `,"after":`...)
		b = appendImage(b, c.After, content)
	}
	if c.Before != nil {
		b = append(b, `,"before":`...)
		b = appendImage(b, c.Before, content)
	}
	b = append(b, `,"content":"`...)
	b = append(b, content.String()...)
	b = append(b, '"')
	if tx.ID != "" {
		b = append(b, `,"tx":`...)
		b = jsonl.AppendString(b, tx.ID)
	}
	if tx.Origin != "" {
		b = append(b, `,"origin":`...)
		b = jsonl.AppendString(b, tx.Origin)
	}
	if c.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, c.Version, 10)
	}
	if tx.Command != "" {
		b = append(b, `,"command":`...)
		b = jsonl.AppendString(b, tx.Command)
	}
	if tx.Prepared {
		// Not committed until an outcome line names this position.
		b = append(b, `,"prepared":true`...)
	}
	b = append(b, `,"commit_time":"`...)
	b = time.Unix(0, tx.CommitTime).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","position":{"source":`...)
	b = jsonl.AppendString(b, source)
	b = append(b, `,"segment":`...)
	b = strconv.AppendUint(b, seg, 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, off, 10)
	b = append(b, `,"index":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	return append(b, "}}\n"...)
}

// appendImage appends an image: JSON as is (an empty one as null), other
// content as a base64 string.
func appendImage(b, img []byte, content format.ContentType) []byte {
	if content == format.ContentJSON {
		if len(img) == 0 {
			return append(b, "null"...)
		}
		return append(b, img...)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, img)
	return append(b, '"')
}

// appendTxHuman appends a readable dump of a transaction.
func appendTxHuman(b []byte, tx *format.Tx, off int64, size int) []byte {
	b = fmt.Appendf(b, "@%-10d tx        %d bytes, commit %s", off, size, fmtTime(tx.CommitTime))
	if tx.ID != "" {
		b = fmt.Appendf(b, ", id %q", tx.ID)
	}
	if tx.Origin != "" {
		b = fmt.Appendf(b, ", origin %q", tx.Origin)
	}
	if tx.Command != "" {
		b = fmt.Appendf(b, ", command %q", tx.Command)
	}
	if tx.Prepared {
		b = append(b, ", prepared (outcome follows)"...)
	}
	b = fmt.Appendf(b, ", %d change(s)\n", len(tx.Changes))
	for i := range tx.Changes {
		c := &tx.Changes[i]
		b = fmt.Appendf(b, "             [%d] %-6s %s key %s", i, c.Op, c.Table, shortBytes(c.Key, format.ContentText))
		if len(c.After) > 0 {
			b = fmt.Appendf(b, " after %s", shortBytes(c.After, c.Content))
		}
		if c.Before != nil {
			b = fmt.Appendf(b, " before %s", shortBytes(c.Before, c.Content))
		}
		if c.Version != 0 {
			b = fmt.Appendf(b, " version %d", c.Version)
		}
		b = append(b, '\n')
	}
	return b
}

// shortBytes renders an image or key for the human dump, cut at 200 bytes.
func shortBytes(v []byte, content format.ContentType) string {
	const max = 200
	cut := ""
	if len(v) > max {
		cut = fmt.Sprintf("…(%d bytes)", len(v))
		v = v[:max]
	}
	if content != format.ContentBinary && utf8.Valid(v) {
		if content == format.ContentJSON {
			return string(v) + cut
		}
		return strconv.Quote(string(v)) + cut
	}
	return "0x" + fmt.Sprintf("%x", v) + cut
}
