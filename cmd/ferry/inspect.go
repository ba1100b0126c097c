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
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ferrysync/ferry/format"
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
	groups, err := collectSegments(paths)
	if err != nil {
		return fmt.Errorf("ferry inspect: %w", err)
	}
	out := bufio.NewWriterSize(env.Stdout, 1<<20)
	in := &inspector{opts: o, out: out, stderr: env.Stderr}
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := in.source(g); err != nil {
			out.Flush()
			return fmt.Errorf("ferry inspect: %w", err)
		}
	}
	if o.verify && !o.json {
		fmt.Fprintf(out, "%d segments, %d transactions, %d changes: %s\n", in.segments, in.txs, in.changes, in.verdict())
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("ferry inspect: writing output: %w", err)
	}
	switch {
	case in.corrupt > 0:
		return &exitError{code: inspectExitCorrupt, err: fmt.Errorf("ferry inspect: %d problem(s) found, first: %s", in.corrupt+in.torn, in.first)}
	case in.torn > 0:
		return &exitError{code: inspectExitTorn, err: fmt.Errorf("ferry inspect: %d torn tail(s), first: %s", in.torn, in.first)}
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

// segmentRef is a segment file to inspect; named is false for a file whose
// name is not a segment name (its header then says what it is).
type segmentRef struct {
	path    string
	source  string
	segment uint64
	named   bool
}

// collectSegments expands the paths into segments grouped by source, each
// group ordered by segment number. Files not named like segments are their
// own group.
func collectSegments(paths []string) ([][]segmentRef, error) {
	seen := map[string]bool{}
	bySource := map[string][]segmentRef{}
	var loose [][]segmentRef
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			segs, err := format.ListSegments(p, "")
			if err != nil {
				return nil, err
			}
			if len(segs) == 0 {
				return nil, fmt.Errorf("no segment files (<source>-<20 digits>%s) in directory %s", format.Ext, p)
			}
			for _, s := range segs {
				if !seen[s.Path] {
					seen[s.Path] = true
					bySource[s.Source] = append(bySource[s.Source], segmentRef{path: s.Path, source: s.Source, segment: s.Segment, named: true})
				}
			}
			continue
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		if src, seg, ok := format.ParseSegmentName(filepath.Base(p)); ok {
			bySource[src] = append(bySource[src], segmentRef{path: p, source: src, segment: seg, named: true})
		} else {
			loose = append(loose, []segmentRef{{path: p}})
		}
	}
	var sources []string
	for s := range bySource {
		sources = append(sources, s)
	}
	sort.Strings(sources)
	var groups [][]segmentRef
	for _, s := range sources {
		g := bySource[s]
		sort.Slice(g, func(i, j int) bool { return g[i].segment < g[j].segment })
		groups = append(groups, g)
	}
	return append(groups, loose...), nil
}

// inspector dumps and checks segments, counting what it finds.
type inspector struct {
	opts    inspectOpts
	out     *bufio.Writer
	stderr  io.Writer
	buf     []byte
	tx      format.Tx
	outcome format.Outcome

	segments, txs, changes int
	corrupt, torn          int
	first                  string // the first problem found
}

func (in *inspector) verdict() string {
	switch {
	case in.corrupt > 0:
		return "CORRUPT"
	case in.torn > 0:
		return "TORN TAIL"
	}
	return "ok"
}

// problem records a corruption (torn false) or a torn tail and reports it on
// stderr.
func (in *inspector) problem(torn bool, msg string) {
	if in.first == "" {
		in.first = msg
	}
	kind := "corrupt"
	if torn {
		in.torn++
		kind = "torn tail"
	} else {
		in.corrupt++
	}
	in.out.Flush()
	fmt.Fprintf(in.stderr, "ferry inspect: %s: %s\n", kind, msg)
}

// segmentEnd is how reading a segment ended.
type segmentEnd struct {
	sealed bool
	seal   format.Seal
	end    int64 // offset after the last valid frame
	torn   bool  // a torn tail follows end
	bad    bool  // corruption stopped the read
	txs    int
	chs    int
}

// source inspects one source's segments in order.
func (in *inspector) source(g []segmentRef) error {
	for i, ref := range g {
		last := i == len(g)-1
		res, err := in.segment(ref, last)
		if err != nil {
			return err
		}
		if !in.opts.verify || last || res.bad {
			continue
		}
		next := g[i+1]
		switch {
		case next.segment != ref.segment+1:
			in.problem(false, fmt.Sprintf("%s: gap in the chain of source %q: segment %d is followed by segment %d; segments in between are missing",
				ref.path, ref.source, ref.segment, next.segment))
		case !res.sealed && !res.torn:
			in.info(ref, "abandoned without a seal at offset %d (its writer stopped without closing; nothing is missing)", res.end)
		}
	}
	return nil
}

func (in *inspector) info(ref segmentRef, f string, args ...any) {
	if in.opts.verify && !in.opts.json {
		fmt.Fprintf(in.out, "        %s: %s\n", filepath.Base(ref.path), fmt.Sprintf(f, args...))
	}
}

// segment reads one segment, dumping it as asked, and reports how it ended.
// Only errors that are not about the data are returned.
func (in *inspector) segment(ref segmentRef, last bool) (segmentEnd, error) {
	var res segmentEnd
	in.segments++
	f, err := format.OpenSegment(ref.path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	rd, err := format.NewReader(f, ref.path)
	if err != nil {
		var pe *format.PositionError
		switch {
		case errors.As(err, &pe) && errors.Is(err, format.ErrTornTail):
			res.torn = true
			in.problem(true, fmt.Sprintf("%s: the segment header is incomplete: %v (a writer crashed while creating the segment, or is creating it now)", ref.path, err))
			in.verifyLine("TORN", ref, "incomplete header")
		case errors.As(err, &pe):
			res.bad = true
			in.problem(false, err.Error())
			in.verifyLine("CORRUPT", ref, "header: %v", pe.Err)
		default:
			return res, err
		}
		return res, nil
	}
	h := rd.Header()
	if in.opts.verify && ref.named && (h.Source != ref.source || h.Segment != ref.segment) {
		res.bad = true
		in.problem(false, fmt.Sprintf("%s: offset 0: the header says source %q segment %d, which does not match the file name (source %q segment %d)",
			ref.path, h.Source, h.Segment, ref.source, ref.segment))
	}
	if !ref.named {
		ref.source, ref.segment = h.Source, h.Segment
	}
	if !in.opts.verify && !in.opts.json {
		fmt.Fprintf(in.out, "== %s  source %s  segment %d  version %d  created %s  header %d bytes\n",
			ref.path, h.Source, h.Segment, h.Version, fmtTime(h.Created), h.Len)
	}
	for {
		fr, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *format.PositionError
			if !errors.As(err, &pe) {
				return res, err
			}
			res.end = rd.End()
			if errors.Is(err, format.ErrTornTail) {
				res.torn = true
				why := "a writer crashed while writing this frame, or is still writing it"
				if !last {
					why = "the writer crashed while writing this frame; a later segment exists, so these bytes are abandoned and were never a whole transaction"
				}
				in.problem(true, fmt.Sprintf("%v (%s)", err, why))
				in.verifyLine("TORN", ref, "torn tail at offset %d after %d transactions", pe.Offset, res.txs)
				if !in.opts.verify && !in.opts.json {
					fmt.Fprintf(in.out, "-- torn tail at offset %d\n", pe.Offset)
				}
				return res, nil
			}
			res.bad = true
			in.problem(false, err.Error())
			in.verifyLine("CORRUPT", ref, "offset %d: %v", pe.Offset, pe.Err)
			return res, nil
		}
		if err := in.frame(ref, rd, fr, &res); err != nil {
			return res, err
		}
	}
	res.end = rd.End()
	res.seal, res.sealed = rd.Sealed()
	state := "open: no seal yet"
	if res.sealed {
		state = fmt.Sprintf("sealed, next segment %d", res.seal.Next)
		if res.seal.Transactions != uint64(res.txs) || res.seal.Changes != uint64(res.chs) {
			res.bad = true
			in.problem(false, fmt.Sprintf("%s: the seal counts %d transactions and %d changes, the segment holds %d and %d",
				ref.path, res.seal.Transactions, res.seal.Changes, res.txs, res.chs))
		}
	} else if !last {
		state = "abandoned: no seal"
	}
	if !res.bad {
		in.verifyLine("ok", ref, "%s; %d transactions, %d changes, %d bytes", state, res.txs, res.chs, res.end)
	}
	if !in.opts.verify && !in.opts.json {
		fmt.Fprintf(in.out, "-- end at offset %d (%s)\n", res.end, state)
	}
	return res, nil
}

func (in *inspector) verifyLine(status string, ref segmentRef, f string, args ...any) {
	if in.opts.verify && !in.opts.json {
		fmt.Fprintf(in.out, "%-7s %s: %s\n", status, filepath.Base(ref.path), fmt.Sprintf(f, args...))
	}
}

// frame dumps one frame.
func (in *inspector) frame(ref segmentRef, rd *format.Reader, fr format.Frame, res *segmentEnd) error {
	human := !in.opts.verify && !in.opts.json
	switch fr.Type {
	case format.FrameTx:
		if err := format.DecodeTx(fr.Payload, &in.tx); err != nil {
			// The CRC matched: the writer wrote a malformed payload.
			res.bad = true
			in.problem(false, (&format.PositionError{Path: ref.path, Segment: ref.segment, Offset: rd.Offset(), Err: err}).Error())
			return nil
		}
		res.txs++
		res.chs += len(in.tx.Changes)
		in.txs++
		in.changes += len(in.tx.Changes)
		switch {
		case in.opts.json:
			for i := range in.tx.Changes {
				in.buf = appendChangeJSON(in.buf[:0], &in.tx, i, ref.source, ref.segment, rd.Offset())
				if _, err := in.out.Write(in.buf); err != nil {
					return err
				}
			}
		case human:
			in.buf = appendTxHuman(in.buf[:0], &in.tx, rd.Offset(), len(fr.Payload))
			if _, err := in.out.Write(in.buf); err != nil {
				return err
			}
		}
	case format.FrameSeal:
		if human {
			s, _ := rd.Sealed()
			fmt.Fprintf(in.out, "@%-10d seal      next segment %d, %d transactions, %d changes, sealed %s\n",
				rd.Offset(), s.Next, s.Transactions, s.Changes, fmtTime(s.Time))
		}
	case format.FrameHeartbeat:
		if human {
			t, _ := format.DecodeHeartbeat(fr.Payload)
			fmt.Fprintf(in.out, "@%-10d heartbeat %s\n", rd.Offset(), fmtTime(t))
		}
	case format.FrameRejection:
		r, err := format.DecodeRejection(fr.Payload)
		if err != nil {
			res.bad = true
			in.problem(false, (&format.PositionError{Path: ref.path, Segment: ref.segment, Offset: rd.Offset(), Err: err}).Error())
			return nil
		}
		switch {
		case in.opts.json:
			in.buf = append(in.buf[:0], `{"rejected":`...)
			in.buf = appendJSONString(in.buf, r.Command)
			in.buf = append(in.buf, `,"origin":`...)
			in.buf = appendJSONString(in.buf, r.Origin)
			in.buf = append(in.buf, `,"reason":`...)
			in.buf = appendJSONString(in.buf, r.Reason)
			in.buf = fmt.Appendf(in.buf, `,"time":"%s","position":{"source":`, fmtTime(r.Time))
			in.buf = appendJSONString(in.buf, ref.source)
			in.buf = fmt.Appendf(in.buf, `,"segment":%d,"offset":%d}}`+"\n", ref.segment, rd.Offset())
			if _, err := in.out.Write(in.buf); err != nil {
				return err
			}
		case human:
			fmt.Fprintf(in.out, "@%-10d rejection %s, command %q of %q: %s\n", rd.Offset(), fmtTime(r.Time), r.Command, r.Origin, r.Reason)
		}
	case format.FrameOutcome:
		if err := format.DecodeOutcome(fr.Payload, &in.outcome); err != nil {
			res.bad = true
			in.problem(false, (&format.PositionError{Path: ref.path, Segment: ref.segment, Offset: rd.Offset(), Err: err}).Error())
			return nil
		}
		switch {
		case in.opts.json:
			for _, r := range in.outcome.Resolutions {
				in.buf = fmt.Appendf(in.buf[:0], `{"outcome":%q,"prepared":{"segment":%d,"offset":%d},"time":"%s","position":{"source":`,
					r.Decision, r.Prepared.Segment, r.Prepared.Offset, fmtTime(in.outcome.Time))
				in.buf = appendJSONString(in.buf, ref.source)
				in.buf = fmt.Appendf(in.buf, `,"segment":%d,"offset":%d}}`+"\n", ref.segment, rd.Offset())
				if _, err := in.out.Write(in.buf); err != nil {
					return err
				}
			}
		case human:
			in.buf = fmt.Appendf(in.buf[:0], "@%-10d outcome   %s, %d resolution(s):", rd.Offset(), fmtTime(in.outcome.Time), len(in.outcome.Resolutions))
			for _, r := range in.outcome.Resolutions {
				in.buf = fmt.Appendf(in.buf, " %v %s", r.Prepared, r.Decision)
			}
			if _, err := in.out.Write(append(in.buf, '\n')); err != nil {
				return err
			}
		}
	default:
		if human {
			fmt.Fprintf(in.out, "@%-10d %s  %d bytes (optional frame type, skipped)\n", rd.Offset(), fr.Type, len(fr.Payload))
		}
	}
	return nil
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// appendChangeJSON appends change i of tx as one JSON line.
func appendChangeJSON(b []byte, tx *format.Tx, i int, source string, seg uint64, off int64) []byte {
	c := &tx.Changes[i]
	b = append(b, `{"table":`...)
	b = appendJSONString(b, c.Table)
	b = append(b, `,"op":"`...)
	b = append(b, c.Op.String()...)
	b = append(b, '"')
	if utf8.Valid(c.Key) {
		b = append(b, `,"key":`...)
		b = appendJSONString(b, string(c.Key))
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
		b = appendJSONString(b, tx.ID)
	}
	if tx.Origin != "" {
		b = append(b, `,"origin":`...)
		b = appendJSONString(b, tx.Origin)
	}
	if c.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, c.Version, 10)
	}
	if tx.Command != "" {
		b = append(b, `,"command":`...)
		b = appendJSONString(b, tx.Command)
	}
	if tx.Prepared {
		// Not committed until an outcome line names this position.
		b = append(b, `,"prepared":true`...)
	}
	b = append(b, `,"commit_time":"`...)
	b = time.Unix(0, tx.CommitTime).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","position":{"source":`...)
	b = appendJSONString(b, source)
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

// appendJSONString appends s as a JSON string; s must be valid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
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
