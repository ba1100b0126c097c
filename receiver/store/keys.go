package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Keyspace. Every key starts with one byte naming what it holds:
//
//	'm' + name                      meta: last change id, stream cursor, webhook cursor, row key encoding
//	'p' + source                    a source's applied position (posRecord)
//	'r' + uvarint(len(table)) + table + encoded key   the current row (rowRecord; key encoding: rowKeys)
//	'c' + first change id (u64 big endian)    a change log entry's index record (logfile.go)
//	't' + written at (u64 big endian) + row key   a tombstone's index entry (tombstone.go)
//	'w' + uvarint(len(table)) + table + source   a source has written the table (tables.go)
//	'v' + table                     a table's highest row version (tables.go)
//	'q' + uvarint(len(source)) + source + segment (u64 BE) + offset (u64 BE)   a parked prepared transaction (parked.go)
//	'k' + 's'|'o' + command id      a write-back command's submitted and outcome records (commands.go)
//
// Rows of one table are contiguous and ordered by their encoded keys, so a
// table scan is one iterator; change ids are big endian so the log iterates
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

// rowKeys says how a row's key follows its table prefix in the store.
//
//	rowKeysBytes    the key's bytes (stores created before this
//	                encoding: a store keeps the one it was created with)
//	rowKeysNumeric  0x01 + length + digits for a key that is a canonical
//	                decimal integer (1-255 ASCII digits, no leading zero
//	                but "0" itself); 0x02 + the key's bytes for every
//	                other key
//
// Why numeric keys: tables keyed by integers are the common case, and
// their text's byte order ("10" < "9") is not the database's. A load sends
// such a table in the database's order, so every chunk's byte range
// spanned the keys of every earlier chunk: no chunk found its range empty
// and bulk ingestion (ingest.go) was never taken. In numeric order the
// chunks' ranges follow each other, as the database's do. A table's keys
// iterate numeric keys first, in numeric order, then the others in byte
// order; meta record keyRowKeys names the store's encoding.
type rowKeys byte

const (
	rowKeysBytes   rowKeys = 1
	rowKeysNumeric rowKeys = 2

	tagNumeric = 0x01
	tagBytes   = 0x02
)

var keyRowKeys = []byte("mrowkeys")

func (e rowKeys) String() string {
	switch e {
	case rowKeysBytes:
		return "bytes"
	case rowKeysNumeric:
		return "numeric"
	}
	return fmt.Sprintf("rowKeys(%d)", byte(e))
}

// openRowKeys finds the store's row key encoding: the one its meta record
// names; for a store without one, the bytes if it holds any row or
// tombstone (it was created before the record existed), else — a new
// store — numeric keys, recorded and flushed before anything is written:
// without a WAL only a flush makes it durable, and an ingested table is
// durable at once, so a crash must not leave rows without the record that
// says how to read them. create, for tests, forces the encoding of a new
// store (rowKeysBytes then writes no record, as older stores have none).
func (s *Store) openRowKeys(create rowKeys) error {
	v, ok, err := s.getMeta(keyRowKeys)
	if err != nil {
		return err
	}
	if ok {
		if len(v) != 1 || (rowKeys(v[0]) != rowKeysBytes && rowKeys(v[0]) != rowKeysNumeric) {
			return fmt.Errorf("store: %s: unknown row key encoding %x (written by a newer ferry? use that version, or rebuild the receiver's data)", s.dir, v)
		}
		s.rk = rowKeys(v[0])
		return nil
	}
	for _, p := range []byte{prefixRow, prefixTomb} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			return fmt.Errorf("store: reading the row key encoding: %w", err)
		}
		held := it.First()
		if err := it.Close(); err != nil {
			return fmt.Errorf("store: reading the row key encoding: %w", err)
		}
		if held {
			s.rk = rowKeysBytes
			return nil
		}
	}
	if create == rowKeysBytes {
		s.rk = rowKeysBytes
		return nil
	}
	s.rk = rowKeysNumeric
	if err := s.db.Set(keyRowKeys, []byte{byte(s.rk)}, s.wo); err != nil {
		return fmt.Errorf("store: recording the row key encoding: %w", err)
	}
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("store: recording the row key encoding: %w", err)
	}
	return nil
}

// numericKey reports whether k is a canonical decimal integer.
func numericKey(k []byte) bool {
	if len(k) == 0 || len(k) > 255 || (k[0] == '0' && len(k) > 1) {
		return false
	}
	for _, c := range k {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// appendKey appends the encoding of key, without its table prefix.
func (e rowKeys) appendKey(dst, key []byte) []byte {
	if e == rowKeysBytes {
		return append(dst, key...)
	}
	if numericKey(key) {
		return append(append(dst, tagNumeric, byte(len(key))), key...)
	}
	return append(append(dst, tagBytes), key...)
}

// appendRow appends the store key of (table, key).
func (e rowKeys) appendRow(dst []byte, table string, key []byte) []byte {
	return e.appendKey(appendTablePrefix(dst, table), key)
}

// decodeKey returns the key encoded in enc (a row key without its table
// prefix); it aliases enc.
func (e rowKeys) decodeKey(enc []byte) ([]byte, error) {
	if e == rowKeysBytes {
		return enc, nil
	}
	if len(enc) > 0 && enc[0] == tagBytes {
		return enc[1:], nil
	}
	if len(enc) >= 2 && enc[0] == tagNumeric && int(enc[1]) == len(enc)-2 {
		return enc[2:], nil
	}
	return nil, fmt.Errorf("store: corrupt row key %q", enc)
}

// CompareKeys orders two keys of a table as scans of a store created by
// this version return them (rowKeysNumeric); (*Store).CompareKeys gives a
// given store's order.
func CompareKeys(a, b []byte) int { return rowKeysNumeric.compare(a, b) }

// CompareKeys orders two keys of a table as the store's scans return them.
func (s *Store) CompareKeys(a, b []byte) int { return s.rk.compare(a, b) }

// compare orders two keys as their encodings do.
func (e rowKeys) compare(a, b []byte) int {
	if e == rowKeysNumeric {
		na, nb := numericKey(a), numericKey(b)
		switch {
		case na && nb:
			if len(a) != len(b) {
				return cmp.Compare(len(a), len(b))
			}
		case na:
			return -1
		case nb:
			return 1
		}
	}
	return bytes.Compare(a, b)
}

// prefixRanges returns the key ranges, in key order, of table's rows whose
// key starts with prefix: [lower, upper) pairs. Numeric keys with a digit
// prefix lie in one range per length (ScanPage skips the empty ones
// without a seek).
func (e rowKeys) prefixRanges(table string, prefix []byte) [][2][]byte {
	tp := appendTablePrefix(nil, table)
	if e == rowKeysBytes {
		lo := append(tp, prefix...)
		return [][2][]byte{{lo, prefixEnd(lo)}}
	}
	var out [][2][]byte
	switch {
	case len(prefix) == 0:
		lo := append(slices.Clip(tp), tagNumeric)
		return [][2][]byte{{lo, prefixEnd(tp)}}
	case numericKey(prefix) && prefix[0] != '0':
		for n := len(prefix); n <= 255; n++ {
			lo := append(append(slices.Clip(tp), tagNumeric, byte(n)), prefix...)
			out = append(out, [2][]byte{lo, prefixEnd(lo)})
		}
	case len(prefix) == 1 && prefix[0] == '0':
		lo := append(slices.Clip(tp), tagNumeric, 1, '0')
		out = append(out, [2][]byte{lo, prefixEnd(lo)})
	}
	lo := append(append(slices.Clip(tp), tagBytes), prefix...)
	return append(out, [2][]byte{lo, prefixEnd(lo)})
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
