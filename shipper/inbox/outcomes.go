package inbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ferrysync/ferry/format"
)

// scanner reads a source's change files for command outcomes: a committed
// transaction carrying a command id, a prepared one once an outcome frame
// says it committed, a rejection frame. It remembers where it stopped and
// the prepared command frames still waiting for their outcome, in a state
// file, so that after a restart it reads on from there.
type scanner struct {
	dir, source string
	statePath   string
	rescanBack  time.Duration

	st    scanState
	dirty bool
	// pending is the next rescan point (the state saved at pendingAt):
	// it becomes Back once Back is rescanBack old.
	pending   *backState
	pendingAt time.Time
	tx        format.Tx
	out       format.Outcome
	// open is the reader of the segment being written, kept from one scan
	// to the next (at its end, it reads on as the segment grows):
	// reopening it with a fresh 256 KiB buffer at every poll was 3% of
	// the write-back path's CPU.
	open struct {
		segment uint64
		rd      *format.Reader
		f       *os.File
	}
}

// close closes the segment kept open between scans, if any.
func (s *scanner) close() {
	if s.open.f != nil {
		s.open.f.Close()
	}
	s.open.rd, s.open.f = nil, nil
}

type scanState struct {
	Segment  uint64            `json:"segment"` // 0: from the first segment present
	Offset   int64             `json:"offset"`  // next frame (0: the segment's first)
	Prepared []preparedCommand `json:"prepared,omitempty"`
	prepared map[format.Position]string
	// Back is an earlier saved state, rescanBack to rescanBack*2 behind:
	// a restarted agent reads the change files again from there, so that
	// it knows the ids whose outcomes it saw lately. The stream may offer
	// those commands again — a nats-server killed before it wrote its
	// consumer state forgets acknowledgements (and may even reuse the
	// sequence numbers of messages it lost), a receiver publishes a
	// command again when its service resubmits it — and a legacy that
	// finds the id recorded writes its outcome again (an applied frame, or
	// its rejection frame) rather than carrying it out: reading back spares
	// the legacy most of those, and the ids older than this are the
	// legacy's to answer (SPEC.md section 23).
	Back   *backState `json:"back,omitempty"`
	BackAt time.Time  `json:"back_at,omitzero"`
}

type backState struct {
	Segment  uint64            `json:"segment"`
	Offset   int64             `json:"offset"`
	Prepared []preparedCommand `json:"prepared,omitempty"`
}

// DefaultRescanBack is how far behind (in time) the state a restarted
// agent reads the change files from again lags, by default (Config.RescanBack).
const DefaultRescanBack = 10 * time.Minute

type preparedCommand struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
	Command string `json:"command"`
}

const stateFile = ".agent-state.json"

func newScanner(changeDir, source, inboxDir string, rescanBack time.Duration) (*scanner, error) {
	s := &scanner{dir: changeDir, source: source, statePath: filepath.Join(inboxDir, stateFile), rescanBack: rescanBack}
	s.st.prepared = map[format.Position]string{}
	b, err := os.ReadFile(s.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: reading %s: %w", s.statePath, err)
	}
	if err := json.Unmarshal(b, &s.st); err != nil {
		return nil, fmt.Errorf("inbox: %s is damaged (%v): remove it and the agent re-reads the change files from their first segment", s.statePath, err)
	}
	s.st.prepared = map[format.Position]string{}
	from := s.st.Prepared
	if b := s.st.Back; b != nil {
		// Read again from the earlier state: the outcomes since then are
		// seen again (their ids become known; pending ones are resolved).
		s.st.Segment, s.st.Offset, from = b.Segment, b.Offset, b.Prepared
	}
	for _, p := range from {
		s.st.prepared[format.Position{Segment: p.Segment, Offset: p.Offset}] = p.Command
	}
	return s, nil
}

// save writes the state file if it changed (temporary file, fsync, rename,
// directory fsync).
func (s *scanner) save() error {
	if !s.dirty {
		return nil
	}
	s.st.Prepared = s.st.Prepared[:0]
	for p, c := range s.st.prepared {
		s.st.Prepared = append(s.st.Prepared, preparedCommand{Segment: p.Segment, Offset: p.Offset, Command: c})
	}
	if now := time.Now(); s.st.Back == nil || now.Sub(s.st.BackAt) >= s.rescanBack {
		// The state saved now becomes the rescan point once it is old
		// enough: keep the last one and move it forward every rescanBack.
		if s.pending != nil {
			s.st.Back, s.st.BackAt = s.pending, s.pendingAt
		} else if s.st.Back == nil {
			s.st.Back, s.st.BackAt = &backState{Segment: s.st.Segment, Offset: s.st.Offset, Prepared: slices.Clone(s.st.Prepared)}, now
		}
		s.pending = &backState{Segment: s.st.Segment, Offset: s.st.Offset, Prepared: slices.Clone(s.st.Prepared)}
		s.pendingAt = now
	}
	b, err := json.Marshal(&s.st)
	if err != nil {
		return err
	}
	if err := writeAtomic(s.statePath, b); err != nil {
		return err
	}
	s.dirty = false
	return nil
}

// writeAtomic replaces path with b: a temporary file, fsync, rename,
// directory fsync.
func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("inbox: writing %s: %w", path, err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("inbox: writing %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// scan reads the change files from where it stopped to their end and calls
// done with the id of every command whose outcome it finds (an id may come
// more than once: a legacy may record a duplicate). A corrupt segment is an
// error: outcomes behind it cannot be read.
func (s *scanner) scan(done func(id string)) error {
	segs, err := format.ListSegments(s.dir, s.source)
	if err != nil {
		return err
	}
	for i, sf := range segs {
		if sf.Segment < s.st.Segment {
			continue
		}
		if sf.Segment > s.st.Segment {
			// The first segment present, or the next one: start at its
			// first frame.
			s.st.Segment, s.st.Offset, s.dirty = sf.Segment, 0, true
		}
		last := i == len(segs)-1
		sealed, err := s.scanSegment(sf, done)
		if err != nil {
			return err
		}
		if !sealed && last {
			return nil // the segment being written: read on next time
		}
		// Sealed, or abandoned by a writer that crashed (a newer segment
		// exists): the next segment follows.
	}
	return nil
}

func (s *scanner) scanSegment(sf format.SegmentFile, done func(string)) (sealed bool, err error) {
	rd := s.open.rd
	if rd == nil || s.open.segment != sf.Segment || rd.End() != s.st.Offset {
		s.close()
		var f *os.File
		if rd, f, err = format.OpenReader(sf.Path, s.st.Offset); err != nil {
			return false, fmt.Errorf("inbox: reading outcomes: %w", err)
		}
		s.open.segment, s.open.rd, s.open.f = sf.Segment, rd, f
	}
	for {
		fr, err := rd.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, format.ErrTornTail) {
				_, sealed := rd.Sealed()
				if sealed {
					s.close() // nothing more comes: the next segment follows
				}
				return sealed, nil
			}
			s.close()
			return false, fmt.Errorf("inbox: reading outcomes in %s: %w", sf.Path, err)
		}
		pos := format.Position{Segment: sf.Segment, Offset: rd.Offset()}
		switch fr.Type {
		case format.FrameTx:
			if err := format.DecodeTx(fr.Payload, &s.tx); err != nil {
				return false, fmt.Errorf("inbox: %s at %d: %w", sf.Path, pos.Offset, err)
			}
			if s.tx.Command != "" {
				if s.tx.Prepared {
					s.st.prepared[pos] = s.tx.Command
				} else {
					done(s.tx.Command)
				}
			}
		case format.FrameOutcome:
			if err := format.DecodeOutcome(fr.Payload, &s.out); err != nil {
				return false, fmt.Errorf("inbox: %s at %d: %w", sf.Path, pos.Offset, err)
			}
			for _, r := range s.out.Resolutions {
				id, ok := s.st.prepared[r.Prepared]
				if !ok {
					continue // not a command, or resolved before
				}
				delete(s.st.prepared, r.Prepared)
				if r.Decision == format.DecisionCommitted {
					done(id)
				}
				// Aborted: the legacy did not carry it out; the command
				// stays in the inbox and is offered again.
			}
		case format.FrameRejection:
			r, err := format.DecodeRejection(fr.Payload)
			if err != nil {
				return false, fmt.Errorf("inbox: %s at %d: %w", sf.Path, pos.Offset, err)
			}
			done(r.Command)
		case format.FrameApplied:
			// The legacy wrote the outcome of a command it carried out
			// earlier again: a command delivered after this agent forgot
			// its id (older than the rescan point) is done by it.
			r, err := format.DecodeApplied(fr.Payload)
			if err != nil {
				return false, fmt.Errorf("inbox: %s at %d: %w", sf.Path, pos.Offset, err)
			}
			done(r.Command)
		}
		s.st.Offset, s.dirty = rd.End(), true
	}
}

// rescanFrom returns where a restart reads the change files again from.
func (s *scanner) rescanFrom() format.Position {
	if b := s.st.Back; b != nil {
		return format.Position{Segment: b.Segment, Offset: b.Offset}
	}
	return format.Position{}
}

// position returns where the scanner stands, for status.
func (s *scanner) position() format.Position {
	return format.Position{Segment: s.st.Segment, Offset: s.st.Offset}
}
