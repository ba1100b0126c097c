package store

import (
	"encoding/binary"
	"fmt"
)

// Keyspace. Every key starts with one byte naming what it holds:
//
//	'm' + name                      meta: last change id, stream cursor, webhook cursor
//	'p' + source                    a source's applied position (posRecord)
//	'r' + uvarint(len(table)) + table + key   the current row (rowRecord)
//	'c' + first change id (u64 big endian)    a change log entry's index record (logfile.go)
//	't' + written at (u64 big endian) + row key   a tombstone's index entry (tombstone.go)
//	'w' + uvarint(len(table)) + table + source   a source has written the table (tables.go)
//	'v' + table                     a table's highest row version (tables.go)
//	'q' + uvarint(len(source)) + source + segment (u64 BE) + offset (u64 BE)   a parked prepared transaction (parked.go)
//	'k' + 's'|'o' + command id      a write-back command's submitted and outcome records (commands.go)
//
// Rows of one table are contiguous and ordered by key bytes, so a prefix scan
// of a table is one iterator; change ids are big endian so the log iterates
// in apply order. The first byte of every value is a record version.
const (
	prefixMeta     = 'm'
	prefixPos      = 'p'
	prefixRow      = 'r'
	prefixChange   = 'c'
	prefixTomb     = 't'
	prefixPark     = 'q'
	prefixWriter   = 'w'
	prefixTableVer = 'v'
)

var (
	keyLastChange = []byte("mchange")
	keyStream     = []byte("mstream")
	keyWebhook    = []byte("mwebhook")
	keyWriters    = []byte("mtablewriters") // the 'w' records cover every table's writers
)

const recordVersion = 1

func posKey(source string) []byte {
	return append([]byte{prefixPos}, source...)
}

// appendTablePrefix appends the key prefix of every row of table.
func appendTablePrefix(dst []byte, table string) []byte {
	dst = append(dst, prefixRow)
	dst = binary.AppendUvarint(dst, uint64(len(table)))
	return append(dst, table...)
}

func appendRowKey(dst []byte, table string, key []byte) []byte {
	return append(appendTablePrefix(dst, table), key...)
}

func appendChangeKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixChange), id)
}

func changeKeyID(k []byte) (uint64, bool) {
	if len(k) != 9 || k[0] != prefixChange {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// reader decodes a stored record, remembering the first error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("store: corrupt record: %s at byte %d of %d", what, r.off, len(r.b))
	}
}

func (r *reader) u8() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail("truncated byte")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b)-r.off < 4 {
		r.fail("truncated u32")
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b)-r.off < 8 {
		r.fail("truncated u64")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.b[r.off:])
	if k <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.off += k
	return v
}

func (r *reader) bytes() []byte {
	if r.err != nil {
		return nil
	}
	n, k := binary.Uvarint(r.b[r.off:])
	if k <= 0 || n > uint64(len(r.b)-r.off-k) {
		r.fail("bad length")
		return nil
	}
	r.off += k
	v := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return v
}

func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	v := r.b[r.off:]
	r.off = len(r.b)
	return v
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}
