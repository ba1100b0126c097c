package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/flatjson"
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
	b := append(make([]byte, 0, 192), commandRecordVersion)
	var ok bool
	switch r := v.(type) {
	case *Submitted:
		b, ok = r.appendPlain(b)
	case *Outcome:
		b, ok = r.appendPlain(b)
	}
	if ok {
		return b, nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{commandRecordVersion}, j...), nil
}

func decodeRecord(b []byte, v any) error {
	if len(b) == 0 || b[0] != commandRecordVersion {
		return fmt.Errorf("%w: command record of version %v", ErrCorruptRecord, b[:min(len(b), 1)])
	}
	switch r := v.(type) {
	case *Submitted:
		if r.decodePlain(b[1:]) {
			return nil
		}
	case *Outcome:
		if r.decodePlain(b[1:]) {
			return nil
		}
	}
	if err := json.Unmarshal(b[1:], v); err != nil {
		return fmt.Errorf("%w: command record: %v", ErrCorruptRecord, err)
	}
	return nil
}

// The records in the plain form (internal/flatjson) are written and read
// without reflection, as json.Marshal and json.Unmarshal would: a point
// read of a command decoded its two records through encoding/json, ~3% of
// a write-back command's CPU. Anything else takes encoding/json.

func (r *Submitted) appendPlain(b []byte) ([]byte, bool) {
	ok := true
	str := func(name, v string) {
		if ok {
			b = append(b, name...)
			b, ok = flatjson.AppendString(b, v)
		}
	}
	b = append(b, '{')
	str(`"source":`, r.Source)
	str(`,"table":`, r.Table)
	str(`,"key":`, r.Key)
	str(`,"op":`, r.Op)
	str(`,"digest":`, r.Digest)
	if !ok {
		return b, false
	}
	b = append(b, `,"time":"`...)
	b, err := r.Time.AppendText(b) // what Time.MarshalJSON writes between its quotes
	if err != nil {
		return b, false
	}
	return append(b, `"}`...), true
}

func (r *Submitted) decodePlain(b []byte) bool {
	x := *r // json.Unmarshal leaves the fields the record lacks as they were
	o := flatjson.Open(b)
	seen := 0 // a field twice is left to encoding/json
	for o.Next() {
		f := 0
		switch string(o.Key()) {
		case "source":
			f, x.Source = 1, o.Str()
		case "table":
			f, x.Table = 2, o.Str()
		case "key":
			f, x.Key = 4, o.Str()
		case "op":
			f, x.Op = 8, o.Str()
		case "digest":
			f, x.Digest = 16, o.Str()
		case "time":
			f = 32
			if err := x.Time.UnmarshalText(o.Bytes()); err != nil { // what Time.UnmarshalJSON does inside the quotes
				o.Fail()
			}
		default:
			o.Fail()
		}
		o.Once(&seen, f)
	}
	if !o.Rest() {
		return false
	}
	*r = x
	return true
}

func (r *Outcome) appendPlain(b []byte) ([]byte, bool) {
	ok := true
	str := func(name, v string) {
		if ok {
			b = append(b, name...)
			b, ok = flatjson.AppendString(b, v)
		}
	}
	b = append(b, '{')
	str(`"state":`, r.State)
	if r.Origin != "" {
		str(`,"origin":`, r.Origin)
	}
	str(`,"source":`, r.Source)
	if !ok {
		return b, false
	}
	b = strconv.AppendUint(append(b, `,"segment":`...), r.Segment, 10)
	b = strconv.AppendInt(append(b, `,"offset":`...), r.Offset, 10)
	if r.ChangeID != 0 {
		b = strconv.AppendUint(append(b, `,"change_id":`...), r.ChangeID, 10)
	}
	if r.Version != 0 {
		b = strconv.AppendUint(append(b, `,"version":`...), r.Version, 10)
	}
	if r.Reason != "" {
		if str(`,"reason":`, r.Reason); !ok {
			return b, false
		}
	}
	b = strconv.AppendInt(append(b, `,"time":`...), r.Time, 10)
	return append(b, '}'), true
}

func (r *Outcome) decodePlain(b []byte) bool {
	x := *r
	o := flatjson.Open(b)
	seen := 0
	for o.Next() {
		f := 0
		switch string(o.Key()) {
		case "state":
			f, x.State = 1, o.Str()
		case "origin":
			f, x.Origin = 2, o.Str()
		case "source":
			f, x.Source = 4, o.Str()
		case "segment":
			f, x.Segment = 8, o.Uint()
		case "offset":
			f, x.Offset = 16, o.Int()
		case "change_id":
			f, x.ChangeID = 32, o.Uint()
		case "version":
			f, x.Version = 64, o.Uint()
		case "reason":
			f, x.Reason = 128, o.Str()
		case "time":
			f, x.Time = 256, o.Int()
		default:
			o.Fail()
		}
		o.Once(&seen, f)
	}
	if !o.Rest() {
		return false
	}
	*r = x
	return true
}

// ErrCorruptRecord means a record in the store cannot be decoded.
var ErrCorruptRecord = errors.New("store: corrupt record")

// ErrCommandConflict means a command id was submitted again with other
// content.
var ErrCommandConflict = errors.New("store: command id already used for another command")

// Submit records that the service submitted command id, unless it already
// did: it returns the record held and whether it was new. An id held with
// another digest is ErrCommandConflict. It is SubmitBatch of one command.
func (s *Store) Submit(id string, sub Submitted) (Submitted, bool, error) {
	res, err := s.SubmitBatch([]string{id}, []Submitted{sub})
	if len(res) == 0 {
		return Submitted{}, false, err
	}
	return res[0].Held, res[0].New, err
}

// SubmitResult is what SubmitBatch did with one command.
type SubmitResult struct {
	Held    Submitted // the record held: sub if New, else the first submission's
	New     bool
	Outcome *Outcome // the command's outcome if the store already holds one
	Err     error    // ErrCommandConflict: the id is held for another command
}

// SubmitBatch records that the service submitted the commands ids[i]
// (records subs[i]), each as Submit does, in one store batch: all of them
// or, if any id is held for another command (ErrCommandConflict in its
// result, and as the error), none. The ids must be distinct. Submissions
// are serialised (one check-and-set at a time). Without WithSync the
// records become durable at the next flush (WithFlushInterval), well
// inside the commands stream's de-duplication window, which covers a
// resubmission meanwhile.
func (s *Store) SubmitBatch(ids []string, subs []Submitted) ([]SubmitResult, error) {
	if len(ids) != len(subs) {
		return nil, fmt.Errorf("store: %d command ids for %d records", len(ids), len(subs))
	}
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	res := make([]SubmitResult, len(ids))
	for i := range res {
		res[i] = SubmitResult{Held: subs[i], New: true}
	}
	outcomes := make([]*Outcome, len(ids))
	var conflict error
	err := s.readCommands(ids, []byte{cmdOutcome, cmdSubmitted}, func(kind byte, i int, v []byte) error {
		id := ids[i]
		if kind == cmdOutcome {
			outcomes[i] = new(Outcome)
			if err := decodeRecord(v, outcomes[i]); err != nil {
				return fmt.Errorf("command %s: %w", id, err)
			}
			return nil
		}
		var old Submitted
		if err := decodeRecord(v, &old); err != nil {
			return fmt.Errorf("command %s: %w", id, err)
		}
		res[i].Held, res[i].New = old, false
		if old.Digest != subs[i].Digest {
			res[i].Err = fmt.Errorf("%w: %s", ErrCommandConflict, id)
			conflict = cmp.Or(conflict, res[i].Err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if conflict != nil {
		for i := range res {
			res[i].New = false
		}
		return res, conflict
	}
	for i := range res {
		res[i].Outcome = outcomes[i]
	}
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	for i, id := range ids {
		if !res[i].New {
			continue
		}
		v, err := encodeRecord(&subs[i])
		if err != nil {
			return nil, err
		}
		if err := b.Set(commandKey(cmdSubmitted, id), v, nil); err != nil {
			return nil, fmt.Errorf("store: recording command %s: %w", id, err)
		}
		n++
	}
	if n == 0 {
		return res, nil
	}
	if err := b.Commit(s.wo); err != nil {
		return nil, fmt.Errorf("store: recording %d commands (first %s): %w", n, ids[0], err)
	}
	s.committed()
	s.cmds.mu.Lock()
	for i, id := range ids {
		if res[i].New && res[i].Outcome == nil {
			s.cmds.pending[id] = pendingCmd{table: subs[i].Table, key: subs[i].Key, submitted: subs[i].Time}
		}
	}
	s.cmds.mu.Unlock()
	return res, nil
}

// CommandStatus is what the store knows of a command id.
type CommandStatus struct {
	Submitted *Submitted // nil: not submitted through this receiver
	Outcome   *Outcome   // nil: no outcome applied yet
}

// Command returns what the store holds for id; ok is false if it holds
// nothing. It is Commands of one id.
func (s *Store) Command(id string) (CommandStatus, bool, error) {
	sts, oks, err := s.Commands([]string{id})
	if err != nil {
		return CommandStatus{}, false, err
	}
	return sts[0], oks[0], nil
}

// Commands returns what the store holds for each of ids, as of one moment;
// oks[i] is false if it holds nothing for ids[i].
func (s *Store) Commands(ids []string) ([]CommandStatus, []bool, error) {
	sts := make([]CommandStatus, len(ids))
	err := s.readCommands(ids, []byte{cmdOutcome, cmdSubmitted}, func(kind byte, i int, v []byte) error {
		var err error
		if kind == cmdSubmitted {
			sts[i].Submitted = new(Submitted)
			err = decodeRecord(v, sts[i].Submitted)
		} else {
			sts[i].Outcome = new(Outcome)
			err = decodeRecord(v, sts[i].Outcome)
		}
		if err != nil {
			return fmt.Errorf("command %s: %w", ids[i], err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	oks := make([]bool, len(ids))
	for i := range sts {
		oks[i] = sts[i].Submitted != nil || sts[i].Outcome != nil
	}
	return sts, oks, nil
}

// readCommands reads the records of the kinds given (in key order) of ids
// (any order, repeats allowed): fn is called with each record held, v valid
// during the call only. One iterator seeking the sorted keys (SeekPrefixGE:
// bloom filters as a Get, without building an iterator per key) costs about
// half a Get per key (BenchmarkReadCommands), and reads every record as of
// one moment.
func (s *Store) readCommands(ids []string, kinds []byte, fn func(kind byte, i int, v []byte) error) error {
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCommand}, UpperBound: []byte{prefixCommand + 1}})
	if err != nil {
		return fmt.Errorf("store: reading command records: %w", err)
	}
	var k []byte
	for _, kind := range kinds { // in key order: each seek goes forward
		for _, i := range order {
			k = append(append(k[:0], prefixCommand, kind), ids[i]...)
			if !it.SeekPrefixGE(k) || !bytes.Equal(it.Key(), k) {
				continue
			}
			v, err := it.ValueAndErr()
			if err == nil {
				err = fn(kind, i, v)
			}
			if err != nil {
				it.Close()
				return err
			}
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("store: reading command records: %w", err)
	}
	return nil
}

// outcome records a command's outcome in the batch, unless one is already
// recorded (in the store, or earlier in this batch): the first record of a
// command is its outcome (SPEC.md: a second one is reported, not applied).
// The store is checked once for the whole work, at its commit
// (dropHeldOutcomes): a Get per outcome here was 3% of a write-back
// command's CPU.
func (b *Batch) outcome(id string, o Outcome) error {
	_, dup := b.w.seen[id]
	first := b.w
	if b.flying != nil && !dup {
		_, dup = b.flying.seen[id]
		first = b.flying
	}
	if dup {
		state := ""
		for i := range first.cmds {
			if first.cmds[i].id == id {
				state = first.cmds[i].out.State
			}
		}
		b.s.duplicateOutcome(id, state, o)
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
	b.w.cmds = append(b.w.cmds, cmdRecord{key: commandKey(cmdOutcome, id), val: v, id: id, out: o})
	return nil
}

// dropHeldOutcomes drops, before the work is committed, its outcome records
// of commands the store already holds an outcome of (the first stands),
// unless the work or the one in flight purges that record. The work in
// flight, not visible in Pebble yet, was checked in memory by outcome; the
// store holds the same answer now as it did then for the rest: only this
// batch writes outcomes between the two, and a purge in flight that lands
// meanwhile takes the record away just as purging discounts it.
func (b *Batch) dropHeldOutcomes() error {
	w := b.w
	if len(w.cmds) == 0 {
		return nil
	}
	ids := make([]string, len(w.cmds))
	for i := range w.cmds {
		ids[i] = w.cmds[i].id
	}
	var drop []bool
	err := b.s.readCommands(ids, []byte{cmdOutcome}, func(_ byte, i int, v []byte) error {
		if b.purging(ids[i]) {
			return nil // its records go in this commit: this one is its new record
		}
		var old Outcome
		if err := decodeRecord(v, &old); err != nil {
			return fmt.Errorf("command %s: %w", ids[i], err)
		}
		b.s.duplicateOutcome(ids[i], old.State, w.cmds[i].out)
		if drop == nil {
			drop = make([]bool, len(ids))
		}
		drop[i] = true
		return nil
	})
	if err != nil || drop == nil {
		return err
	}
	kept := w.cmds[:0]
	for i, r := range w.cmds {
		if drop[i] {
			delete(w.seen, r.id) // a later outcome is checked against the store's
			continue
		}
		kept = append(kept, r)
	}
	clear(w.cmds[len(kept):])
	w.cmds = kept
	return nil
}

// purging reports whether the records of command id are purged by the work
// being filled or the one in flight (not visible in Pebble yet).
func (b *Batch) purging(id string) bool {
	if _, ok := b.w.cmdPurged[id]; ok {
		return true
	}
	if b.flying != nil {
		_, ok := b.flying.cmdPurged[id]
		return ok
	}
	return false
}

// cmdRecord is an outcome record waiting for its commit.
type cmdRecord struct {
	key, val []byte
	id       string
	out      Outcome
}

func (w *commitWork) writeCommands() error {
	for _, r := range w.cmds {
		if err := w.b.Set(r.key, r.val, nil); err != nil {
			return fmt.Errorf("store: recording a command outcome: %w", err)
		}
		// Indexed by this commit's time, for the retention.
		w.val = appendCmdIndexKey(w.val[:0], w.now, r.id)
		if err := w.b.Set(w.val, nil, nil); err != nil {
			return fmt.Errorf("store: indexing a command outcome: %w", err)
		}
	}
	return nil
}

// duplicateOutcome reports a second outcome record of command id, the
// first being in state first. One that agrees is the legacy writing an
// outcome again, as SPEC.md asks of a command delivered again after it was
// carried out or refused: expected after crashes and resubmissions, so
// only logged at debug level. One that disagrees is a legacy breaking the
// rules (a command both applied and rejected): a warning.
func (s *Store) duplicateOutcome(id, first string, o Outcome) {
	s.dupOutcomes.Add(1)
	lvl, msg := slog.LevelDebug, "the outcome of a write-back command written again: the first record stands"
	if first != o.State {
		lvl, msg = slog.LevelWarn, "a second, different outcome for a write-back command: the first one stands"
	}
	s.log.Log(context.Background(), lvl, msg, "command", id, "first", first,
		"state", o.State, "source", o.Source, "segment", o.Segment, "offset", o.Offset)
}

// DuplicateOutcomes counts outcome records that named a command which
// already had one (kept: the first), whether they agree with it or not.
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

// AppliedAgain applies an applied frame spanning [off, end) of segment seg
// (the legacy wrote again the outcome of a command it carried out at an
// earlier delivery): it changes no row; it moves the source's position and
// records the command applied, unless its outcome is already recorded
// (the usual case: the first record stands).
func (b *Batch) AppliedAgain(source string, seg uint64, off, end int64, streamSeq uint64, r *format.Applied) error {
	p, err := b.advance(source, seg, off, end, streamSeq, r.Time)
	if err != nil {
		return err
	}
	b.pos[source] = *p
	b.bytes += end - off
	return b.outcome(r.Command, Outcome{State: CommandApplied, Origin: r.Origin, Source: source, Segment: seg,
		Offset: off, Version: r.Version, Time: r.Time})
}

// cmdTrack follows the commands submitted through this receiver until
// their outcome (for status, metrics and GET ?wait=): the pending ones in
// memory, loaded at Open from the submitted records without an outcome.
type cmdTrack struct {
	mu      sync.Mutex
	pending map[string]pendingCmd
	// waiters: by command id, usually one (a slice, not a set: a map per
	// id waited for was 1.5% of the write-back path's allocations).
	waiters           map[string][]*cmdWaiter
	applied, rejected uint64
	lat               []float64 // the last latencyRing latencies, seconds
	latNext           int
	recent            []RecentCommand // newest last, at most recentCommands
}

type pendingCmd struct {
	table, key string
	submitted  time.Time
}

// cmdWaiter waits for the outcomes of the commands left (under cmds.mu);
// ch is closed when none is left.
type cmdWaiter struct {
	ch   chan struct{}
	left map[string]struct{}
}

const (
	latencyRing    = 1024
	recentCommands = 20
)

// RecentCommand is a command of this receiver that got its outcome.
type RecentCommand struct {
	ID, State, Table, Key, Reason string
	// Latency is from its submission to its outcome in this store.
	Latency time.Duration
}

// CommandStats is what became of the commands submitted through this
// receiver since it started (Pending: all of them without an outcome).
type CommandStats struct {
	Pending           int
	OldestPending     time.Time // zero: none pending
	Applied, Rejected uint64
	// LatencyP50/P99 over the last 1024 outcomes (0: none yet).
	LatencyP50, LatencyP99 time.Duration
	Recent                 []RecentCommand // newest first
}

func (s *Store) loadCommands() error {
	s.cmds.pending = map[string]pendingCmd{}
	s.cmds.waiters = map[string][]*cmdWaiter{}
	lo := []byte{prefixCommand, cmdSubmitted}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: []byte{prefixCommand, cmdSubmitted + 1}})
	if err != nil {
		return fmt.Errorf("store: reading command records: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id := string(it.Key()[2:])
		if _, held, err := s.getMeta(commandKey(cmdOutcome, id)); err != nil {
			return err
		} else if held {
			continue
		}
		var sub Submitted
		if err := decodeRecord(it.Value(), &sub); err != nil {
			return fmt.Errorf("command %s: %w", id, err)
		}
		s.cmds.pending[id] = pendingCmd{table: sub.Table, key: sub.Key, submitted: sub.Time}
	}
	return it.Error()
}

// WatchCommands returns a channel closed once every command of ids has
// an outcome committed to the store (at once if they all have one), and a
// function that stops the watch (call it when done waiting). A waiter is
// woken once, by the last of its commands, not by every outcome.
func (s *Store) WatchCommands(ids []string) (<-chan struct{}, func(), error) {
	w := &cmdWaiter{ch: make(chan struct{}), left: make(map[string]struct{}, len(ids))}
	s.cmds.mu.Lock()
	for _, id := range ids {
		if _, ok := w.left[id]; ok {
			continue
		}
		w.left[id] = struct{}{}
		s.cmds.waiters[id] = append(s.cmds.waiters[id], w)
	}
	s.cmds.mu.Unlock()
	stop := func() {
		s.cmds.mu.Lock()
		for id := range w.left {
			s.unwaitLocked(id, w)
		}
		clear(w.left)
		s.cmds.mu.Unlock()
	}
	// Outcomes committed before the watch was registered: read from the
	// store (those committed meanwhile are crossed off twice, harmlessly).
	var held []string
	err := s.readCommands(ids, []byte{cmdOutcome}, func(_ byte, i int, _ []byte) error {
		held = append(held, ids[i])
		return nil
	})
	if err != nil {
		stop()
		return nil, nil, err
	}
	if len(held) > 0 {
		s.cmds.mu.Lock()
		for _, id := range held {
			s.crossOffLocked(id, w)
		}
		s.cmds.mu.Unlock()
	}
	return w.ch, stop, nil
}

// crossOffLocked records that command id, which w waits for, has its
// outcome, and wakes w if it was the last one.
func (s *Store) crossOffLocked(id string, w *cmdWaiter) {
	if _, ok := w.left[id]; !ok {
		return
	}
	delete(w.left, id)
	s.unwaitLocked(id, w)
	if len(w.left) == 0 {
		close(w.ch)
	}
}

func (s *Store) unwaitLocked(id string, w *cmdWaiter) {
	ws := s.cmds.waiters[id]
	if i := slices.Index(ws, w); i >= 0 {
		ws[i] = ws[len(ws)-1]
		ws[len(ws)-1] = nil
		if ws = ws[:len(ws)-1]; len(ws) == 0 {
			delete(s.cmds.waiters, id)
		} else {
			s.cmds.waiters[id] = ws
		}
	}
}

// outcomesCommitted is called once a batch with outcome records is
// committed: it wakes their waiters and accounts this receiver's own.
func (s *Store) outcomesCommitted(recs []cmdRecord) {
	if len(recs) == 0 {
		return
	}
	now := time.Now()
	s.cmds.mu.Lock()
	defer s.cmds.mu.Unlock()
	for i := range recs {
		r := &recs[i]
		// Every waiter of the id is crossed off: the list goes first
		// (crossing off would remove each from it as it is walked).
		ws := s.cmds.waiters[r.id]
		delete(s.cmds.waiters, r.id)
		for _, w := range ws {
			s.crossOffLocked(r.id, w)
		}
		p, ok := s.cmds.pending[r.id]
		if !ok {
			continue // another service's command, or already accounted
		}
		delete(s.cmds.pending, r.id)
		if r.out.State == CommandApplied {
			s.cmds.applied++
		} else {
			s.cmds.rejected++
		}
		lat := max(now.Sub(p.submitted), 0)
		if len(s.cmds.lat) < latencyRing {
			s.cmds.lat = append(s.cmds.lat, lat.Seconds())
		} else {
			s.cmds.lat[s.cmds.latNext] = lat.Seconds()
			s.cmds.latNext = (s.cmds.latNext + 1) % latencyRing
		}
		if len(s.cmds.recent) == recentCommands {
			s.cmds.recent = append(s.cmds.recent[:0], s.cmds.recent[1:]...)
		}
		s.cmds.recent = append(s.cmds.recent, RecentCommand{ID: r.id, State: r.out.State, Table: p.table, Key: p.key, Reason: r.out.Reason, Latency: lat})
	}
}

// CommandStats returns what became of this receiver's commands.
func (s *Store) CommandStats() CommandStats {
	s.cmds.mu.Lock()
	defer s.cmds.mu.Unlock()
	st := CommandStats{Pending: len(s.cmds.pending), Applied: s.cmds.applied, Rejected: s.cmds.rejected}
	for _, p := range s.cmds.pending {
		if st.OldestPending.IsZero() || p.submitted.Before(st.OldestPending) {
			st.OldestPending = p.submitted
		}
	}
	if n := len(s.cmds.lat); n > 0 {
		l := slices.Clone(s.cmds.lat)
		slices.Sort(l)
		at := func(q float64) time.Duration {
			return time.Duration(l[min(n-1, int(q*float64(n)))] * float64(time.Second))
		}
		st.LatencyP50, st.LatencyP99 = at(0.50), at(0.99)
	}
	for i := len(s.cmds.recent) - 1; i >= 0; i-- {
		st.Recent = append(st.Recent, s.cmds.recent[i])
	}
	return st
}
