// Package check decides whether a receiver holds exactly what a directory of
// change files says: it computes the truth from the files (the final row of
// every table and key once every committed transaction is applied in order,
// torn tails excluded, nothing after a corrupt frame) and compares a
// receiver's state and change feed with it, key by key and change by change.
// The truth may start from base rows (WithBase): the rows the legacy held
// before its change files, which an initial load sends.
//
// It is the oracle of the fault suite and of `ferry demo`'s final
// verification; it trusts nothing but the format package (and the
// receiver's API for what it serves).
package check

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/ferrysync/ferry/format"
)

// ChangeID identifies one change: its source, the position of its
// transaction's frame and its index in the frame.
type ChangeID struct {
	Source  string
	Segment uint64
	Offset  int64
	Index   int
}

func (id ChangeID) String() string {
	return id.Source + ":" + strconv.FormatUint(id.Segment, 10) + ":" + strconv.FormatInt(id.Offset, 10) + ":" + strconv.Itoa(id.Index)
}

// less orders ids of one source in source order.
func (id ChangeID) less(o ChangeID) bool {
	if id.Segment != o.Segment {
		return id.Segment < o.Segment
	}
	if id.Offset != o.Offset {
		return id.Offset < o.Offset
	}
	return id.Index < o.Index
}

// Row is the final state of one key according to the files.
type Row struct {
	Value      []byte
	Content    format.ContentType
	Op         format.Op
	Version    ChangeID // the change that wrote it last (zero for a base row)
	CommitTime int64
	// Base says no change of the files wrote the row: it is a base row
	// (WithBase) as it was, which only an initial load can bring.
	Base bool
}

// writer names what wrote the row, for a difference's example.
func (r Row) writer() string {
	if r.Base {
		return "the base rows, no change since"
	}
	return r.Version.String()
}

// Source is what the files of one source hold.
type Source struct {
	Name         string
	Segments     int
	Transactions int
	Changes      int
	// End is the position just past the last whole frame read.
	End format.Position
	// Torn lists the torn tails found (crashed writers), as "file: offset".
	Torn []string
	// Stopped is the corruption that ends what can be applied of this
	// source (a *format.PositionError naming file and offset), or nil.
	Stopped error
	// ids are the change ids in source order.
	ids []ChangeID
	// LastCommit is the commit time of the last transaction, Unix ns.
	LastCommit int64
}

// IDs returns the source's change ids in source order.
func (s *Source) IDs() []ChangeID { return s.ids }

// Truth is the expected state of a receiver that applied every source.
type Truth struct {
	// Tables maps table, then key, to the key's final row; deleted keys
	// are absent.
	Tables  map[string]map[string]Row
	Sources map[string]*Source
	// Conflicts lists keys written by more than one source (at most a
	// few): their final value depends on how the receiver interleaved the
	// sources, so the truth cannot say it. Compare refuses such a truth.
	Conflicts []string
	// BaseRows is the number of base rows the truth started from
	// (WithBase), before the changes applied over them.
	BaseRows int
	// conflicts counts them all.
	conflicts int
	owner     map[string]map[string]string // table, key → the source that wrote it
}

// Changes returns the number of changes of every source.
func (t *Truth) Changes() int {
	n := 0
	for _, s := range t.Sources {
		n += s.Changes
	}
	return n
}

// Rows returns the number of live rows.
func (t *Truth) Rows() int {
	n := 0
	for _, rows := range t.Tables {
		n += len(rows)
	}
	return n
}

// SourceNames returns the sources in name order.
func (t *Truth) SourceNames() []string {
	names := make([]string, 0, len(t.Sources))
	for n := range t.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Option configures FromDir.
type Option func(*fromDir)

type fromDir struct {
	base map[string]map[string][]byte
}

// WithBase starts the truth from base rows: what the legacy's database held
// before the first change of the files (a dump, which an initial load
// sends). base maps table, then key, to the row's JSON image, rendered as
// the change files render rows. The changes of the files apply over them:
// an update replaces a base row, a delete removes it. FromDir copies what
// it keeps.
func WithBase(base map[string]map[string][]byte) Option {
	return func(o *fromDir) { o.base = base }
}

// FromDir computes the truth from every source's segments in dir. A torn
// tail ends a segment (the writer crashed; its next segment follows);
// corruption ends its source, recorded in Source.Stopped, not returned as an
// error. The files must not be written meanwhile for the result to be
// exact: stop or close the writers first.
func FromDir(dir string, opts ...Option) (*Truth, error) {
	var o fromDir
	for _, opt := range opts {
		opt(&o)
	}
	segs, err := format.ListSegments(dir, "")
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	t := &Truth{Tables: map[string]map[string]Row{}, Sources: map[string]*Source{}, owner: map[string]map[string]string{}}
	// Base rows first: the changes apply over them. They have no source,
	// so they never make a key "written by more than one source".
	for table, rows := range o.base {
		m := t.Tables[table]
		if m == nil {
			m = make(map[string]Row, len(rows))
			t.Tables[table] = m
			t.owner[table] = map[string]string{}
		}
		for key, v := range rows {
			m[key] = Row{Value: append([]byte(nil), v...), Content: format.ContentJSON, Op: format.OpInsert, Base: true}
		}
		t.BaseRows += len(rows)
	}
	for _, sf := range segs {
		src := t.Sources[sf.Source]
		if src == nil {
			src = &Source{Name: sf.Source}
			t.Sources[sf.Source] = src
		}
		if src.Stopped != nil {
			continue
		}
		if err := t.readSegment(src, sf); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Truth) readSegment(src *Source, sf format.SegmentFile) error {
	rd, f, err := format.OpenReader(sf.Path, 0)
	if err != nil {
		var pe *format.PositionError
		if errors.As(err, &pe) && errors.Is(err, format.ErrTornTail) {
			// A writer that crashed while creating the segment.
			src.Torn = append(src.Torn, err.Error())
			return nil
		}
		if errors.As(err, &pe) {
			src.Stopped = err
			return nil
		}
		return fmt.Errorf("check: %w", err)
	}
	defer f.Close()
	if h := rd.Header(); h.Source != sf.Source || h.Segment != sf.Segment {
		src.Stopped = fmt.Errorf("%s: header names source %q segment %d", sf.Path, h.Source, h.Segment)
		return nil
	}
	src.Segments++
	src.End = format.Position{Segment: sf.Segment, Offset: rd.End()}
	var tx format.Tx
	for {
		fr, err := rd.Next()
		switch {
		case err == io.EOF:
			return nil
		case errors.Is(err, format.ErrTornTail):
			src.Torn = append(src.Torn, err.Error())
			return nil
		case err != nil:
			var pe *format.PositionError
			if errors.As(err, &pe) {
				src.Stopped = err
				return nil
			}
			return fmt.Errorf("check: reading %s: %w", sf.Path, err)
		}
		off := rd.Offset()
		src.End = format.Position{Segment: sf.Segment, Offset: rd.End()}
		if fr.Type != format.FrameTx {
			continue
		}
		if err := format.DecodeTx(fr.Payload, &tx); err != nil {
			src.Stopped = &format.PositionError{Path: sf.Path, Segment: sf.Segment, Offset: off, Err: err}
			return nil
		}
		src.Transactions++
		src.LastCommit = tx.CommitTime
		for i := range tx.Changes {
			c := &tx.Changes[i]
			id := ChangeID{Source: src.Name, Segment: sf.Segment, Offset: off, Index: i}
			src.ids = append(src.ids, id)
			src.Changes++
			rows := t.Tables[c.Table]
			if rows == nil {
				rows = map[string]Row{}
				t.Tables[c.Table] = rows
				t.owner[c.Table] = map[string]string{}
			}
			switch o, ok := t.owner[c.Table][string(c.Key)]; {
			case !ok:
				t.owner[c.Table][string(c.Key)] = src.Name
			case o != src.Name && o != "":
				t.conflicts++
				if len(t.Conflicts) < 10 {
					t.Conflicts = append(t.Conflicts, fmt.Sprintf("%s/%s (sources %s and %s)", c.Table, c.Key, o, src.Name))
				}
				t.owner[c.Table][string(c.Key)] = "" // counted once
			}
			if c.Op == format.OpDelete {
				delete(rows, string(c.Key))
				continue
			}
			rows[string(c.Key)] = Row{Value: append([]byte(nil), c.After...), Content: c.Content, Op: c.Op, Version: id, CommitTime: tx.CommitTime}
		}
	}
}

// ParseChangeID parses the form ChangeID.String returns.
func ParseChangeID(s string) (ChangeID, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return ChangeID{}, fmt.Errorf("check: change id %q: want source:segment:offset:index", s)
	}
	seg, err1 := strconv.ParseUint(parts[1], 10, 64)
	off, err2 := strconv.ParseInt(parts[2], 10, 64)
	idx, err3 := strconv.Atoi(parts[3])
	if err := errors.Join(err1, err2, err3); err != nil || !format.ValidSource(parts[0]) {
		return ChangeID{}, fmt.Errorf("check: change id %q: want source:segment:offset:index", s)
	}
	return ChangeID{Source: parts[0], Segment: seg, Offset: off, Index: idx}, nil
}
