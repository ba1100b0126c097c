package format

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// Verifying change files, as `ltx verify` verifies LTX files: what `ferry
// inspect` does, kept beside the format so that a program embedding Ferry
// checks files by the same rules. A segment is read with the Reader (every
// CRC, the Walker's frame rules, the seal's counts), every transaction,
// outcome and rejection is decoded, and with Verifier.Chain each header is
// checked against its file name and the segments of a source against each
// other: no gap in their numbers. A segment that is not its source's last
// and ends without a seal or a torn tail is abandoned: its writer stopped
// without closing it, which loses nothing.

// ErrBrokenChain marks a problem of the chain of segments rather than of a
// segment's bytes: a gap in the segment numbers, or a header that does not
// match its file name.
var ErrBrokenChain = errors.New("format: broken segment chain")

// chainError is an ErrBrokenChain with its own message.
type chainError struct{ msg string }

func (e *chainError) Error() string { return e.msg }
func (e *chainError) Unwrap() error { return ErrBrokenChain }

// SegmentRef is a segment file to verify. Named is false for a file whose
// name is not a segment name: its header then says which segment it is.
type SegmentRef struct {
	Path    string
	Source  string
	Segment uint64
	Named   bool
}

// GroupSegments expands paths (segment files or directories of them) into
// chains: one per source, ordered by segment number, the sources by name,
// then each file not named like a segment on its own. A directory without
// segment files is an error.
func GroupSegments(paths []string) ([][]SegmentRef, error) {
	seen := map[string]bool{}
	bySource := map[string][]SegmentRef{}
	var loose [][]SegmentRef
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			segs, err := ListSegments(p, "")
			if err != nil {
				return nil, err
			}
			if len(segs) == 0 {
				return nil, fmt.Errorf("no segment files (<source>-<20 digits>%s) in directory %s", Ext, p)
			}
			for _, s := range segs {
				if !seen[s.Path] {
					seen[s.Path] = true
					bySource[s.Source] = append(bySource[s.Source], SegmentRef{Path: s.Path, Source: s.Source, Segment: s.Segment, Named: true})
				}
			}
			continue
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		if src, seg, ok := ParseSegmentName(filepath.Base(p)); ok {
			bySource[src] = append(bySource[src], SegmentRef{Path: p, Source: src, Segment: seg, Named: true})
		} else {
			loose = append(loose, []SegmentRef{{Path: p}})
		}
	}
	sources := make([]string, 0, len(bySource))
	for s := range bySource {
		sources = append(sources, s)
	}
	sort.Strings(sources)
	var groups [][]SegmentRef
	for _, s := range sources {
		g := bySource[s]
		sort.Slice(g, func(i, j int) bool { return g[i].Segment < g[j].Segment })
		groups = append(groups, g)
	}
	return append(groups, loose...), nil
}

// Problem is what verifying found wrong: corruption (a bad checksum or
// malformed data in the middle of a segment, a bad header, a broken chain)
// or, with Torn, a torn tail and nothing worse (a crashed writer, or one
// still writing). Err names the file and offset.
type Problem struct {
	Torn bool
	Err  error
}

// SegmentResult is what verifying one segment found.
type SegmentResult struct {
	// Ref is the segment; when it was not Named, Source and Segment are
	// the header's.
	Ref SegmentRef
	// Header is the segment's header, if it could be read (HeaderRead).
	Header     SegmentHeader
	HeaderRead bool
	// Last is set for the last segment of its chain.
	Last bool
	// End is the offset after the last valid frame.
	End int64
	// Transactions and Changes count what the valid frames hold.
	Transactions, Changes int
	// Seal is the segment's seal, if Sealed.
	Seal   Seal
	Sealed bool
	// Torn is set when a torn tail (or an incomplete header) follows End;
	// Corrupt when corruption was found. Stop is the *PositionError that
	// ended the read, if one did (nil for a segment read to its end).
	Torn, Corrupt bool
	Stop          *PositionError
	// Abandoned is set for a segment that is not its source's last and
	// ends cleanly without a seal (its writer stopped without closing
	// it; nothing is missing). Only with Verifier.Chain.
	Abandoned bool
}

// Ok reports whether nothing is wrong with the segment.
func (r *SegmentResult) Ok() bool { return !r.Torn && !r.Corrupt }

// VerifiedFrame is a valid frame as a Verifier passes it on, decoded when it
// is a transaction, an outcome, a rejection or an applied record. Its values
// are reused for the next frame.
type VerifiedFrame struct {
	// Offset is where the frame starts in its segment.
	Offset    int64
	Frame     Frame
	Tx        *Tx        // FrameTx
	Outcome   *Outcome   // FrameOutcome
	Rejection *Rejection // FrameRejection
	Applied   *Applied   // FrameApplied
}

// Verifier reads and checks chains of segments, calling its hooks (any may
// be nil) as it goes, and counts what it found.
type Verifier struct {
	// Chain also checks each header against its file name and the
	// segments of a source against each other.
	Chain bool
	// Start is called once a segment's header is read.
	Start func(*SegmentResult) error
	// Frame is called with every valid frame, in order.
	Frame func(*SegmentResult, *VerifiedFrame) error
	// Problem is called with each problem as it is found.
	Problem func(*SegmentResult, Problem)
	// Done is called when a segment has been read, whatever was found.
	Done func(*SegmentResult) error

	// Totals over everything verified.
	Segments, Transactions, Changes int
	Corrupt, Torn                   int
	// First is the first problem found.
	First error

	tx      Tx
	outcome Outcome
	rej     Rejection
	applied Applied
}

// Verify verifies every chain of paths (GroupSegments) in turn. Errors are
// not about the data (an unreadable path, an I/O error, a hook's error);
// what is wrong with the data is in the counts and the hooks.
func (v *Verifier) Verify(paths []string) error {
	groups, err := GroupSegments(paths)
	if err != nil {
		return err
	}
	for _, g := range groups {
		if err := v.VerifyChain(g); err != nil {
			return err
		}
	}
	return nil
}

// VerifyChain verifies one source's segments, ordered by segment number.
func (v *Verifier) VerifyChain(chain []SegmentRef) error {
	for i, ref := range chain {
		res := &SegmentResult{Ref: ref, Last: i == len(chain)-1}
		if err := v.segment(res); err != nil {
			return err
		}
		gap := !res.Last && chain[i+1].Segment != ref.Segment+1
		if v.Chain && !res.Last && !res.Corrupt && !gap && !res.Sealed && !res.Torn {
			res.Abandoned = true
		}
		if v.Done != nil {
			if err := v.Done(res); err != nil {
				return err
			}
		}
		if v.Chain && gap && !res.Corrupt {
			next := chain[i+1]
			v.problem(res, false, &chainError{fmt.Sprintf("%s: gap in the chain of source %q: segment %d is followed by segment %d; segments in between are missing",
				ref.Path, ref.Source, ref.Segment, next.Segment)})
		}
	}
	return nil
}

func (v *Verifier) problem(res *SegmentResult, torn bool, err error) {
	if v.First == nil {
		v.First = err
	}
	if torn {
		v.Torn++
		res.Torn = true
	} else {
		v.Corrupt++
		res.Corrupt = true
	}
	if v.Problem != nil {
		v.Problem(res, Problem{Torn: torn, Err: err})
	}
}

// segment reads one segment into res. Only errors that are not about the
// data are returned.
func (v *Verifier) segment(res *SegmentResult) error {
	v.Segments++
	ref := &res.Ref
	f, err := OpenSegment(ref.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	rd, err := NewReader(f, ref.Path)
	if err != nil {
		var pe *PositionError
		if !errors.As(err, &pe) {
			return err
		}
		res.Stop = pe
		if errors.Is(err, ErrTornTail) {
			v.problem(res, true, fmt.Errorf("%s: the segment header is incomplete: %w (a writer crashed while creating the segment, or is creating it now)", ref.Path, err))
		} else {
			v.problem(res, false, err)
		}
		return nil
	}
	h := rd.Header()
	res.Header, res.HeaderRead = h, true
	if v.Chain && ref.Named && (h.Source != ref.Source || h.Segment != ref.Segment) {
		v.problem(res, false, &chainError{fmt.Sprintf("%s: offset 0: the header says source %q segment %d, which does not match the file name (source %q segment %d)",
			ref.Path, h.Source, h.Segment, ref.Source, ref.Segment)})
	}
	if !ref.Named {
		ref.Source, ref.Segment = h.Source, h.Segment
	}
	if v.Start != nil {
		if err := v.Start(res); err != nil {
			return err
		}
	}
	var vf VerifiedFrame
	for {
		fr, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *PositionError
			if !errors.As(err, &pe) {
				return err
			}
			res.End, res.Stop = rd.End(), pe
			if errors.Is(err, ErrTornTail) {
				why := "a writer crashed while writing this frame, or is still writing it"
				if !res.Last {
					why = "the writer crashed while writing this frame; a later segment exists, so these bytes are abandoned and were never a whole transaction"
				}
				v.problem(res, true, fmt.Errorf("%w (%s)", err, why))
			} else {
				v.problem(res, false, err)
			}
			return nil
		}
		vf = VerifiedFrame{Offset: rd.Offset(), Frame: fr}
		var derr error
		switch fr.Type {
		case FrameTx:
			if derr = DecodeTx(fr.Payload, &v.tx); derr == nil {
				vf.Tx = &v.tx
				res.Transactions++
				res.Changes += len(v.tx.Changes)
				v.Transactions++
				v.Changes += len(v.tx.Changes)
			}
		case FrameOutcome:
			if derr = DecodeOutcome(fr.Payload, &v.outcome); derr == nil {
				vf.Outcome = &v.outcome
			}
		case FrameRejection:
			if v.rej, derr = DecodeRejection(fr.Payload); derr == nil {
				vf.Rejection = &v.rej
			}
		case FrameApplied:
			if v.applied, derr = DecodeApplied(fr.Payload); derr == nil {
				vf.Applied = &v.applied
			}
		}
		if derr != nil {
			// The CRC matched: the writer wrote a malformed payload.
			v.problem(res, false, &PositionError{Path: ref.Path, Segment: ref.Segment, Offset: rd.Offset(), Err: derr})
			continue
		}
		if v.Frame != nil {
			if err := v.Frame(res, &vf); err != nil {
				return err
			}
		}
	}
	res.End = rd.End()
	res.Seal, res.Sealed = rd.Sealed()
	return nil
}
