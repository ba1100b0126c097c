package store

import (
	"encoding/binary"
	"fmt"

	"github.com/ferrysync/ferry/format"
)

// Version says where a change came from: its identity in its source.
type Version struct {
	Source  string
	Segment uint64
	// Offset is the byte offset of the transaction's frame in the segment.
	Offset int64
	// Index is the change's index in its transaction.
	Index int
}

func (v Version) String() string {
	return fmt.Sprintf("%s:%d:%d:%d", v.Source, v.Segment, v.Offset, v.Index)
}

// Row is the current state of one (table, key).
type Row struct {
	Table   string
	Key     []byte
	Op      format.Op
	Content format.ContentType
	// Value is the after image of the last change.
	Value   []byte
	Version Version
	// RowVersion is the legacy's version of the row after the last change
	// (format.Change.Version), 0 if it supplied none.
	RowVersion uint64
	CommitTime int64 // Unix ns, from the legacy's transaction
	ChangeID   uint64
}

// Change is one entry of the change log.
type Change struct {
	// ID orders the log: the receiver's apply sequence number, dense and
	// increasing. Subscribers use it as a cursor and to de-duplicate.
	ID      uint64
	Table   string
	Key     []byte
	Op      format.Op
	Content format.ContentType
	After   []byte
	// Before is nil when the writer did not record it.
	Before     []byte
	Version    Version
	RowVersion uint64 // the legacy's row version (format.Change.Version), 0 if none
	CommitTime int64  // Unix ns
	AppliedAt  int64  // Unix ns, when this receiver applied it
	TxID       string
	Origin     string
	// Command is the write-back command the transaction carried out, if any.
	Command string
	// Load is the id of the initial load the row came from ("" for a
	// change from a source's files); Version.Source is then "load:<id>",
	// Version.Segment the chunk and Version.Offset the part.
	Load string
}

// SourcePosition is how far a source has been applied.
type SourcePosition struct {
	Source string
	// Segment and Offset: the end of the last applied frame, where the next
	// frame of the source starts. Segment 0 means nothing applied yet.
	Segment uint64
	Offset  int64
	// StreamSeq is the stream sequence of the message the last applied frame
	// came from.
	StreamSeq uint64
	// LastCommit is the commit time of the last applied transaction, and
	// AliveAt the time of the last applied frame of any kind (transaction,
	// heartbeat, seal), Unix ns.
	LastCommit int64
	AliveAt    int64
	// Transactions and Changes count what this receiver applied.
	Transactions uint64
	Changes      uint64
	// Sealed says that the last applied frame is Segment's seal: nothing
	// more may follow in that segment.
	Sealed bool
}

// Position returns the source position as a format.Position.
func (p SourcePosition) Position() format.Position {
	return format.Position{Segment: p.Segment, Offset: p.Offset}
}

// StreamCursor is where the receiver resumes reading its stream.
type StreamCursor struct {
	// Seq is the last stream sequence handled; reading resumes after it.
	Seq uint64
	// Created identifies the stream incarnation (its creation time, Unix ns):
	// a recreated stream restarts its sequences.
	Created int64
	// CheckSeq and CheckID name the last message handled (its stream
	// sequence; its subject and message id): a sequence number alone does
	// not identify a message across a broker restored from an older image
	// and refilled, so a receiver resuming checks that the stream still
	// holds this message at CheckSeq (0: nothing to check).
	CheckSeq uint64
	CheckID  string
}

func encodePos(dst []byte, p *SourcePosition) []byte {
	dst = append(dst, recordVersion)
	dst = binary.LittleEndian.AppendUint64(dst, p.Segment)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.Offset))
	dst = binary.LittleEndian.AppendUint64(dst, p.StreamSeq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.LastCommit))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.AliveAt))
	dst = binary.LittleEndian.AppendUint64(dst, p.Transactions)
	dst = binary.LittleEndian.AppendUint64(dst, p.Changes)
	var flags byte
	if p.Sealed {
		flags |= 1
	}
	return append(dst, flags)
}

func decodePos(source string, b []byte) (SourcePosition, error) {
	r := reader{b: b}
	if v := r.u8(); v != recordVersion && r.err == nil {
		return SourcePosition{}, fmt.Errorf("store: position of source %q: unknown record version %d", source, v)
	}
	p := SourcePosition{Source: source}
	p.Segment = r.u64()
	p.Offset = int64(r.u64())
	p.StreamSeq = r.u64()
	p.LastCommit = int64(r.u64())
	p.AliveAt = int64(r.u64())
	p.Transactions = r.u64()
	p.Changes = r.u64()
	if r.err == nil && r.off < len(r.b) {
		p.Sealed = r.u8()&1 != 0
	}
	if r.err != nil {
		return SourcePosition{}, fmt.Errorf("store: position of source %q: %w", source, r.err)
	}
	return p, nil
}

// Stream cursor record: | version u8 | seq u64 | created i64 | and, when
// known, | check seq u64 | check id (uvarint len + bytes) | (records
// without the check are still read).
func encodeCursor(c StreamCursor) []byte {
	b := []byte{recordVersion}
	b = binary.LittleEndian.AppendUint64(b, c.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.Created))
	if c.CheckSeq == 0 {
		return b
	}
	b = binary.LittleEndian.AppendUint64(b, c.CheckSeq)
	return appendString(b, c.CheckID)
}

func decodeCursor(b []byte) (StreamCursor, error) {
	r := reader{b: b}
	r.u8()
	c := StreamCursor{Seq: r.u64(), Created: int64(r.u64())}
	if r.err == nil && r.off < len(r.b) {
		c.CheckSeq = r.u64()
		c.CheckID = string(r.bytes())
	}
	if r.err != nil {
		return StreamCursor{}, fmt.Errorf("store: stream cursor: %w", r.err)
	}
	return c, nil
}

// Row record, version 3 (versions 1 and 2, still read, had no row version;
// version 1 had fixed-width fields):
//
//	| version u8 = 3 | op u8 | content u8 | segment uvarint | offset uvarint |
//	| index uvarint | commit i64 | change id uvarint | row version uvarint |
//	| source (uvarint len + bytes) | value (rest) |
//
// Every row is inserted into the memtable, flushed and compacted: the
// varints make its metadata ~20 bytes shorter, ~7% of a 200-byte change.
//
// A delete leaves a tombstone: a row record with op OpDelete and no value,
// which reads never show (Get, Scan) and which the row guard compares
// against like any row, until the tombstone retention purges it
// (tombstone.go).
const (
	rowVersion2 = 2
	rowVersion  = 3
)

func appendRow(dst []byte, c *format.Change, v *Version, commit int64, id uint64) []byte {
	ct := c.Content
	if ct == 0 {
		ct = format.ContentJSON
	}
	dst = append(dst, rowVersion, byte(c.Op), byte(ct))
	dst = binary.AppendUvarint(dst, v.Segment)
	dst = binary.AppendUvarint(dst, uint64(v.Offset))
	dst = binary.AppendUvarint(dst, uint64(v.Index))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(commit))
	dst = binary.AppendUvarint(dst, id)
	dst = binary.AppendUvarint(dst, c.Version)
	dst = appendString(dst, v.Source)
	if c.Op == format.OpDelete {
		return dst
	}
	return append(dst, c.After...)
}

func decodeRow(table string, key, b []byte) (Row, error) {
	r := reader{b: b}
	v := r.u8()
	if v != recordVersion && v != rowVersion2 && v != rowVersion && r.err == nil {
		return Row{}, fmt.Errorf("store: row %s/%q: unknown record version %d", table, key, v)
	}
	row := Row{Table: table, Key: key}
	row.Op = format.Op(r.u8())
	row.Content = format.ContentType(r.u8())
	if v == recordVersion {
		row.Version.Segment = r.u64()
		row.Version.Offset = int64(r.u64())
		row.Version.Index = int(r.u32())
		row.CommitTime = int64(r.u64())
		row.ChangeID = r.u64()
	} else {
		row.Version.Segment = r.uvarint()
		row.Version.Offset = int64(r.uvarint())
		row.Version.Index = int(r.uvarint())
		row.CommitTime = int64(r.u64())
		row.ChangeID = r.uvarint()
		if v == rowVersion {
			row.RowVersion = r.uvarint()
		}
	}
	row.Version.Source = string(r.bytes())
	row.Value = r.rest()
	if r.err != nil {
		return Row{}, fmt.Errorf("store: row %s/%q: %w", table, key, r.err)
	}
	return row, nil
}
