package format

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Change is one row change of a transaction.
type Change struct {
	Table string
	Op    Op
	Key   []byte
	// After is the row after the change; empty for a delete.
	After []byte
	// Before is the row before the change, nil when the writer did not
	// record it (a present but empty image is non-nil and empty).
	Before []byte
	// Content says how to read After and Before. Zero encodes as ContentJSON.
	Content ContentType
	// Version (format version 2) is the row's version after this change,
	// supplied by the legacy: it increases with every committed write of
	// the row, in the database's commit order, and is never reused (SPEC.md,
	// "Row versions"). 0 means none; versions start at 1.
	Version uint64
}

// Tx is a transaction: the changes a legacy application committed together.
// Decoded byte slices alias the frame they came from.
type Tx struct {
	// CommitTime is when the legacy committed, in Unix nanoseconds.
	CommitTime int64
	// ID is the legacy's own transaction id, optional.
	ID string
	// Origin names who caused the change (for write-back without echo),
	// optional; empty means the legacy itself.
	Origin string
	// Command (format version 2) is the id of the write-back command this
	// transaction carries out, as the service submitted it; empty for the
	// legacy's own transactions (SPEC.md, "Write-back records").
	Command string
	// Prepared (format version 2) marks a transaction appended before the
	// database's COMMIT, while it still held its locks: whether it
	// committed is known only once an outcome frame of the same source
	// names its position (SPEC.md, "Commit order"). Writer.Prepare sets it.
	Prepared bool
	Changes  []Change
}

// Time returns CommitTime as a time.Time.
func (tx *Tx) Time() time.Time { return time.Unix(0, tx.CommitTime) }

// Transaction payload layout (see SPEC.md, "Transaction frame"):
//
//	| commit time i64 | flags u8 (bit 0: prepared, bit 1: command) |
//	| id: uvarint len + bytes | origin: uvarint len + bytes |
//	| [command: uvarint len + bytes] | change count uvarint | change... |
//
// and each change:
//
//	| op u8 | content type u8 | flags u8 (bit 0: before, bit 1: version) |
//	| table: uvarint len + bytes | key: uvarint len + bytes |
//	| after: uvarint len + bytes | [before: uvarint len + bytes] |
//	| [version: uvarint] |
const (
	txPrepared       = 1 << 0
	txCommand        = 1 << 1
	txFlags          = txPrepared | txCommand
	changeHasBefore  = 1 << 0
	changeHasVersion = 1 << 1
	// minChangeLen is the smallest encoded change, used to bound the change
	// count a hostile payload can announce.
	// (op, content, flags, a 1-byte table, a 1-byte key, an empty after).
	minChangeLen = 3 + 2 + 2 + 1
	// minTxLen is the smallest encoded transaction payload: commit time,
	// flags, empty id and origin, a count of 1 and one change.
	minTxLen = 8 + 1 + 1 + 1 + 1 + minChangeLen
)

// ValidateTx checks tx against the format's rules and limits.
func ValidateTx(tx *Tx) error {
	if len(tx.ID) > MaxIDLen {
		return fmt.Errorf("%w: transaction id of %d bytes (max %d)", ErrTooLarge, len(tx.ID), MaxIDLen)
	}
	if len(tx.Origin) > MaxIDLen {
		return fmt.Errorf("%w: origin of %d bytes (max %d)", ErrTooLarge, len(tx.Origin), MaxIDLen)
	}
	if len(tx.Command) > MaxIDLen {
		return fmt.Errorf("%w: command id of %d bytes (max %d)", ErrTooLarge, len(tx.Command), MaxIDLen)
	}
	if len(tx.Changes) == 0 {
		return fmt.Errorf("%w: transaction without changes", ErrInvalid)
	}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		switch {
		case c.Op < OpInsert || c.Op > OpDelete:
			return fmt.Errorf("%w: change %d: unknown op %d", ErrInvalid, i, c.Op)
		case c.Content > ContentText:
			return fmt.Errorf("%w: change %d: unknown content type %d", ErrInvalid, i, c.Content)
		case len(c.Table) == 0:
			return fmt.Errorf("%w: change %d: empty table name", ErrInvalid, i)
		case len(c.Table) > MaxTableLen:
			return fmt.Errorf("%w: change %d: table name of %d bytes (max %d)", ErrTooLarge, i, len(c.Table), MaxTableLen)
		case len(c.Key) == 0:
			return fmt.Errorf("%w: change %d: empty key", ErrInvalid, i)
		case len(c.Key) > MaxKeyLen:
			return fmt.Errorf("%w: change %d: key of %d bytes (max %d)", ErrTooLarge, i, len(c.Key), MaxKeyLen)
		}
	}
	return nil
}

// TxPayloadLen returns the size of tx's encoded payload.
func TxPayloadLen(tx *Tx) int {
	n := 8 + 1 + uvarintLen(len(tx.ID)) + len(tx.ID) + uvarintLen(len(tx.Origin)) + len(tx.Origin) +
		uvarintLen(len(tx.Changes))
	if tx.Command != "" {
		n += uvarintLen(len(tx.Command)) + len(tx.Command)
	}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		n += 3 + uvarintLen(len(c.Table)) + len(c.Table) + uvarintLen(len(c.Key)) + len(c.Key) +
			uvarintLen(len(c.After)) + len(c.After)
		if c.Before != nil {
			n += uvarintLen(len(c.Before)) + len(c.Before)
		}
		if c.Version != 0 {
			n += uvarintLen64(c.Version)
		}
	}
	return n
}

// AppendTx validates tx and appends it to dst as one whole transaction frame.
func AppendTx(dst []byte, tx *Tx) ([]byte, error) {
	if err := ValidateTx(tx); err != nil {
		return dst, err
	}
	if n := TxPayloadLen(tx); n > MaxFrameLen {
		return dst, fmt.Errorf("%w: transaction of %d bytes (max %d)", ErrTooLarge, n, MaxFrameLen)
	}
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(tx.CommitTime))
	var txFlags byte
	if tx.Prepared {
		txFlags |= txPrepared
	}
	if tx.Command != "" {
		txFlags |= txCommand
	}
	dst = append(dst, txFlags)
	dst = appendBytes(dst, tx.ID)
	dst = appendBytes(dst, tx.Origin)
	if tx.Command != "" {
		dst = appendBytes(dst, tx.Command)
	}
	dst = binary.AppendUvarint(dst, uint64(len(tx.Changes)))
	for i := range tx.Changes {
		c := &tx.Changes[i]
		ct := c.Content
		if ct == 0 {
			ct = ContentJSON
		}
		var flags byte
		if c.Before != nil {
			flags |= changeHasBefore
		}
		if c.Version != 0 {
			flags |= changeHasVersion
		}
		dst = append(dst, byte(c.Op), byte(ct), flags)
		dst = appendBytes(dst, c.Table)
		dst = appendBytes(dst, c.Key)
		dst = appendBytes(dst, c.After)
		if c.Before != nil {
			dst = appendBytes(dst, c.Before)
		}
		if c.Version != 0 {
			dst = binary.AppendUvarint(dst, c.Version)
		}
	}
	finishFrame(dst[start:], FrameTx)
	return dst, nil
}

// DecodeTx decodes a transaction frame's payload into tx, reusing
// tx.Changes. Byte slices in tx alias payload. It never trusts payload: every
// length is checked against what is left before it is used.
func DecodeTx(payload []byte, tx *Tx) error {
	d := decoder{b: payload}
	tx.CommitTime = int64(d.u64())
	flags := d.byte()
	if flags&^txFlags != 0 && d.err == nil {
		return d.fail("unknown transaction flags %#x", flags)
	}
	tx.Prepared = flags&txPrepared != 0
	tx.ID = d.str(MaxIDLen, tx.ID)
	tx.Origin = d.str(MaxIDLen, tx.Origin)
	tx.Command = ""
	if flags&txCommand != 0 {
		if tx.Command = d.str(MaxIDLen, tx.Command); tx.Command == "" && d.err == nil {
			return d.fail("empty command id (leave the flag clear for none)")
		}
	}
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	if n == 0 {
		return d.fail("transaction without changes")
	}
	if n > uint64(len(d.b)-d.off)/minChangeLen {
		return d.fail("change count %d larger than the payload can hold", n)
	}
	if cap(tx.Changes) < int(n) {
		tx.Changes = make([]Change, n)
	}
	tx.Changes = tx.Changes[:n]
	prevTable := ""
	for i := range tx.Changes {
		c := &tx.Changes[i]
		op, ct, flags := Op(d.byte()), ContentType(d.byte()), d.byte()
		if d.err != nil {
			return d.err
		}
		if op < OpInsert || op > OpDelete {
			return d.fail("change %d: unknown op %d", i, op)
		}
		if ct < ContentJSON || ct > ContentText {
			return d.fail("change %d: unknown content type %d", i, ct)
		}
		if flags&^(changeHasBefore|changeHasVersion) != 0 {
			return d.fail("change %d: unknown flags %#x", i, flags)
		}
		c.Op, c.Content = op, ct
		// Transactions usually touch few tables: reuse the previous name's
		// string instead of allocating one per change.
		// The same goes across transactions when tx is reused: c.Table
		// still holds the name this slot had in the previous one.
		table := d.bytes(MaxTableLen)
		if string(table) == prevTable {
			c.Table = prevTable
		} else if string(table) == c.Table {
			prevTable = c.Table
		} else {
			c.Table = string(table)
			prevTable = c.Table
		}
		c.Key = d.bytes(MaxKeyLen)
		c.After = d.bytes(MaxFrameLen)
		c.Before = nil
		if flags&changeHasBefore != 0 {
			c.Before = d.bytes(MaxFrameLen)
		}
		c.Version = 0
		if flags&changeHasVersion != 0 {
			if c.Version = d.uvarint(); c.Version == 0 && d.err == nil {
				return d.fail("change %d: version 0 (versions start at 1; leave the flag clear for none)", i)
			}
		}
		if d.err != nil {
			return d.err
		}
		if len(c.Table) == 0 {
			return d.fail("change %d: empty table name", i)
		}
		if len(c.Key) == 0 {
			return d.fail("change %d: empty key", i)
		}
	}
	if d.off != len(d.b) {
		return d.fail("%d trailing bytes after the last change", len(d.b)-d.off)
	}
	return nil
}

// MaxTxHeaderLen bounds the bytes before a transaction's first change:
// commit time, flags, id, origin, command and change count. TxChangeCount needs no
// more of a payload than this.
const MaxTxHeaderLen = 8 + 1 + 3*(binary.MaxVarintLen64+MaxIDLen) + binary.MaxVarintLen64

// TxChangeCount returns the change count of a transaction payload of
// payloadLen bytes from its first bytes, prefix (the whole payload, or at
// least its first MaxTxHeaderLen bytes), without decoding the changes. It
// applies DecodeTx's rules to what it reads, so a count it returns is one
// DecodeTx would accept; the changes themselves are left to the receiver.
func TxChangeCount(prefix []byte, payloadLen int) (int, error) {
	if len(prefix) > payloadLen {
		prefix = prefix[:payloadLen]
	}
	d := decoder{b: prefix}
	d.u64()
	flags := d.byte()
	if flags&^txFlags != 0 && d.err == nil {
		return 0, d.fail("unknown transaction flags %#x", flags)
	}
	d.bytes(MaxIDLen)
	d.bytes(MaxIDLen)
	if flags&txCommand != 0 {
		if len(d.bytes(MaxIDLen)) == 0 && d.err == nil {
			return 0, d.fail("empty command id (leave the flag clear for none)")
		}
	}
	n := d.uvarint()
	if d.err != nil {
		return 0, d.err
	}
	if n == 0 {
		return 0, d.fail("transaction without changes")
	}
	if n > uint64(payloadLen-d.off)/minChangeLen {
		return 0, d.fail("change count %d larger than the payload can hold", n)
	}
	return int(n), nil
}

// Seal is the payload of the frame that ends a segment.
type Seal struct {
	// Next is the number of the segment that follows.
	Next uint64
	// Transactions and Changes count what the segment holds.
	Transactions uint64
	Changes      uint64
	// Time is when the segment was sealed, in Unix nanoseconds.
	Time int64
}

const sealLen = 32

// AppendSeal appends a seal frame to dst.
func AppendSeal(dst []byte, s Seal) []byte {
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, s.Next)
	dst = binary.LittleEndian.AppendUint64(dst, s.Transactions)
	dst = binary.LittleEndian.AppendUint64(dst, s.Changes)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(s.Time))
	finishFrame(dst[start:], FrameSeal)
	return dst
}

// DecodeSeal decodes a seal frame's payload.
func DecodeSeal(payload []byte) (Seal, error) {
	if len(payload) != sealLen {
		return Seal{}, fmt.Errorf("%w: seal payload of %d bytes, want %d", ErrCorrupt, len(payload), sealLen)
	}
	return Seal{
		Next:         binary.LittleEndian.Uint64(payload[0:]),
		Transactions: binary.LittleEndian.Uint64(payload[8:]),
		Changes:      binary.LittleEndian.Uint64(payload[16:]),
		Time:         int64(binary.LittleEndian.Uint64(payload[24:])),
	}, nil
}

// AppendHeartbeat appends a heartbeat frame stamped t (Unix nanoseconds).
func AppendHeartbeat(dst []byte, t int64) []byte {
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(t))
	finishFrame(dst[start:], FrameHeartbeat)
	return dst
}

// DecodeHeartbeat decodes a heartbeat frame's payload into its time.
func DecodeHeartbeat(payload []byte) (int64, error) {
	if len(payload) != 8 {
		return 0, fmt.Errorf("%w: heartbeat payload of %d bytes, want 8", ErrCorrupt, len(payload))
	}
	return int64(binary.LittleEndian.Uint64(payload)), nil
}

// FrameTime returns the commit, heartbeat, outcome or seal time of a
// frame's payload without decoding the rest, or 0.
func FrameTime(f Frame) int64 {
	switch f.Type {
	case FrameTx, FrameHeartbeat, FrameOutcome:
		if len(f.Payload) >= 8 {
			return int64(binary.LittleEndian.Uint64(f.Payload))
		}
	case FrameSeal:
		if len(f.Payload) == sealLen {
			return int64(binary.LittleEndian.Uint64(f.Payload[24:]))
		}
	}
	return 0
}

func uvarintLen64(n uint64) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

func appendBytes[T string | []byte](dst []byte, b T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decoder reads a payload, remembering the first error so callers can check
// once after a run of reads.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(f string, args ...any) error {
	if d.err == nil {
		d.err = fmt.Errorf("%w: payload offset %d: %s", ErrCorrupt, d.off, fmt.Sprintf(f, args...))
	}
	return d.err
}

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b)-d.off < 8 {
		d.fail("truncated integer")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || d.off >= len(d.b) {
		d.fail("truncated payload")
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	if d.off < len(d.b) && d.b[d.off] < 0x80 {
		v := uint64(d.b[d.off])
		d.off++
		return v
	}
	v, n := uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint (truncated, over 64 bits or not in its shortest form)")
		return 0
	}
	d.off += n
	return v
}

// uvarint decodes an unsigned LEB128 varint from the start of b and returns
// it with its size, or n <= 0 if b holds no valid one. Unlike
// binary.Uvarint it refuses encodings longer than needed (a last byte of 0
// after the first), so that every value has exactly one encoding.
func uvarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < binary.MaxVarintLen64; i++ {
		c := b[i]
		if c < 0x80 {
			if i > 0 && c == 0 {
				return 0, -1 // not minimal
			}
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1 // overflow
			}
			return v | uint64(c)<<(7*i), i + 1
		}
		v |= uint64(c&0x7f) << (7 * i)
	}
	return 0, 0
}

func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("length %d over limit %d", n, limit)
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("length %d past the end of the payload", n)
		return nil
	}
	b := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b
}

// str decodes a string, reusing prev when equal so that decoding the same id
// or origin again does not allocate.
func (d *decoder) str(limit int, prev string) string {
	b := d.bytes(limit)
	if string(b) == prev {
		return prev
	}
	return string(b)
}
