package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/format"
)

// Write-back commands (SPEC.md, "Write-back records"). The store keeps two
// records per command id, under separate keys so that neither overwrites
// the other whatever order they are written in:
//
//	'k' 's' + id   submitted: what this receiver accepted from its service
//	'k' 'o' + id   outcome: applied or rejected, as the legacy's change files say
//
// The outcome is written by the applier in the same batch as the rows the
// command changed, so a reader that sees "applied" also sees the rows.
// Records are JSON behind a version byte: they are small and rare next to
// rows, and readable in a dump.
const prefixCommand = 'k'

const (
	cmdSubmitted = 's'
	cmdOutcome   = 'o'
)

func commandKey(kind byte, id string) []byte {
	return append([]byte{prefixCommand, kind}, id...)
}

// Command states.
const (
	CommandPending  = "pending"
	CommandApplied  = "applied"
	CommandRejected = "rejected"
)

// Submitted is a receiver's record of a command its service submitted.
type Submitted struct {
	Source string    `json:"source"`
	Table  string    `json:"table"`
	Key    string    `json:"key"`
	Op     string    `json:"op"`
	Digest string    `json:"digest"` // of the command's content: the same id must carry the same command
	Time   time.Time `json:"time"`
}

// Outcome is how a command ended, as read from the legacy's change files.
type Outcome struct {
	State  string `json:"state"` // CommandApplied or CommandRejected
	Origin string `json:"origin,omitempty"`
	// Where the record is: the transaction frame that carried the command
	// out (its first change's id and row version), or the rejection frame.
	Source   string `json:"source"`
	Segment  uint64 `json:"segment"`
	Offset   int64  `json:"offset"`
	ChangeID uint64 `json:"change_id,omitempty"`
	Version  uint64 `json:"version,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Time     int64  `json:"time"` // the legacy's commit or rejection time, Unix ns
}

const commandRecordVersion = 1

func encodeRecord(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{commandRecordVersion}, b...), nil
}

func decodeRecord(b []byte, v any) error {
	if len(b) == 0 || b[0] != commandRecordVersion {
		return fmt.Errorf("%w: command record of version %v", ErrCorruptRecord, b[:min(len(b), 1)])
	}
	if err := json.Unmarshal(b[1:], v); err != nil {
		return fmt.Errorf("%w: command record: %v", ErrCorruptRecord, err)
	}
	return nil
}

// ErrCorruptRecord means a record in the store cannot be decoded.
var ErrCorruptRecord = errors.New("store: corrupt record")

// ErrCommandConflict means a command id was submitted again with other
// content.
var ErrCommandConflict = errors.New("store: command id already used for another command")

// Submit records that the service submitted command id, unless it already
// did: it returns the record held and whether it was new. An id held with
// another digest is ErrCommandConflict. Submissions are serialised (one
// check-and-set at a time). Without WithSync the record becomes durable at
// the next flush (WithFlushInterval), well inside the commands stream's
// de-duplication window, which covers a resubmission meanwhile.
func (s *Store) Submit(id string, sub Submitted) (Submitted, bool, error) {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	k := commandKey(cmdSubmitted, id)
	if v, ok, err := s.getMeta(k); err != nil {
		return Submitted{}, false, err
	} else if ok {
		var old Submitted
		if err := decodeRecord(v, &old); err != nil {
			return Submitted{}, false, fmt.Errorf("command %s: %w", id, err)
		}
		if old.Digest != sub.Digest {
			return old, false, fmt.Errorf("%w: %s", ErrCommandConflict, id)
		}
		return old, false, nil
	}
	v, err := encodeRecord(&sub)
	if err != nil {
		return Submitted{}, false, err
	}
	if err := s.db.Set(k, v, s.wo); err != nil {
		return Submitted{}, false, fmt.Errorf("store: recording command %s: %w", id, err)
	}
	s.committed()
	return sub, true, nil
}

// CommandStatus is what the store knows of a command id.
type CommandStatus struct {
	Submitted *Submitted // nil: not submitted through this receiver
	Outcome   *Outcome   // nil: no outcome applied yet
}

// Command returns what the store holds for id; ok is false if it holds
// nothing.
func (s *Store) Command(id string) (CommandStatus, bool, error) {
	var st CommandStatus
	for _, kind := range []byte{cmdSubmitted, cmdOutcome} {
		v, ok, err := s.getMeta(commandKey(kind, id))
		if err != nil {
			return st, false, err
		}
		if !ok {
			continue
		}
		if kind == cmdSubmitted {
			st.Submitted = new(Submitted)
			err = decodeRecord(v, st.Submitted)
		} else {
			st.Outcome = new(Outcome)
			err = decodeRecord(v, st.Outcome)
		}
		if err != nil {
			return st, false, fmt.Errorf("command %s: %w", id, err)
		}
	}
	return st, st.Submitted != nil || st.Outcome != nil, nil
}

// outcome records a command's outcome in the batch, unless one is already
// recorded (in the store, or earlier in this batch): the first record of a
// command is its outcome (SPEC.md: a second one is reported, not applied).
func (b *Batch) outcome(id string, o Outcome) error {
	_, dup := b.w.seen[id]
	if b.flying != nil && !dup {
		_, dup = b.flying.seen[id]
	}
	if dup {
		b.s.duplicateOutcome(id, o)
		return nil
	}
	_, held, err := b.s.getMeta(commandKey(cmdOutcome, id))
	if err != nil {
		return err
	}
	if held {
		b.s.duplicateOutcome(id, o)
		return nil
	}
	v, err := encodeRecord(&o)
	if err != nil {
		return err
	}
	if b.w.seen == nil {
		b.w.seen = map[string]struct{}{}
	}
	b.w.seen[id] = struct{}{}
	b.w.cmds = append(b.w.cmds, cmdRecord{key: commandKey(cmdOutcome, id), val: v})
	return nil
}

// cmdRecord is an outcome record waiting for its commit.
type cmdRecord struct{ key, val []byte }

func (w *commitWork) writeCommands() error {
	for _, r := range w.cmds {
		if err := w.b.Set(r.key, r.val, nil); err != nil {
			return fmt.Errorf("store: recording a command outcome: %w", err)
		}
	}
	return nil
}

func (s *Store) duplicateOutcome(id string, o Outcome) {
	s.dupOutcomes.Add(1)
	s.log.Warn("a second outcome for a write-back command: the first one stands", "command", id,
		"state", o.State, "source", o.Source, "segment", o.Segment, "offset", o.Offset)
}

// DuplicateOutcomes counts outcome records that named a command which
// already had one (kept: the first).
func (s *Store) DuplicateOutcomes() uint64 { return s.dupOutcomes.Load() }

// commandApplied records the outcome of a transaction carrying a command.
func (b *Batch) commandApplied(source string, seg uint64, off int64, firstID uint64, tx *format.Tx) error {
	o := Outcome{State: CommandApplied, Origin: tx.Origin, Source: source, Segment: seg, Offset: off,
		ChangeID: firstID, Time: tx.CommitTime}
	if len(tx.Changes) > 0 {
		o.Version = tx.Changes[0].Version
	}
	return b.outcome(tx.Command, o)
}

// Reject applies a rejection frame spanning [off, end) of segment seg: it
// changes no row; it moves the source's position and records the command's
// outcome.
func (b *Batch) Reject(source string, seg uint64, off, end int64, streamSeq uint64, r *format.Rejection) error {
	p, err := b.advance(source, seg, off, end, streamSeq, r.Time)
	if err != nil {
		return err
	}
	b.pos[source] = *p
	b.bytes += end - off
	return b.outcome(r.Command, Outcome{State: CommandRejected, Origin: r.Origin, Source: source, Segment: seg,
		Offset: off, Reason: r.Reason, Time: r.Time})
}
