// Package load defines the messages of an initial load: a legacy table's
// existing rows sent into the change stream (by `ferry load`, package
// shipper/load) so that a new receiver starts from the data the legacy
// already holds, then follows the live changes. The protocol is specified
// in ../SPEC.md ("Initial load"); this package is its only implementation,
// shared by the loader and the receivers.
//
// A load of one table is a sequence of messages on subject
// "<prefix>.load.<table token>" of the change stream (Subject), each
// described by headers (Header):
//
//   - begin: what is loaded (table, key columns, version column, key range,
//     the fixed upper bound, an estimate of the rows), a JSON body (Begin);
//   - chunk: part Part of chunk Chunk, whose rows are ONE transaction frame
//     of the change files (format.AppendTx: same CRC, same decoder), each row
//     an upsert of the table with the key and image the legacy's change files
//     use for it, compressed like a wire batch (format/wire's codecs). Every
//     chunk message carries the low watermark LowSeq: the stream's last
//     sequence read before the chunk's snapshot was taken; the last part of
//     a chunk says so (Last) and carries the chunk's last key (Hi);
//   - done: every chunk was sent (rows and chunks in all);
//   - failed: the loader gave up, with the reason (body).
//
// Messages have de-duplication ids "<load>/<chunk>/<part>" (MsgID) so a
// retried publish is dropped by the server. Receivers apply a chunk row only
// if the row's held state did not come from a live change confirmed after
// LowSeq (the low-watermark rule, SPEC.md).
package load

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// Header names. They are part of the protocol and must not change.
// Ferry-Codec and Ferry-Raw-Len are the wire batches' (wire.HdrCodec,
// wire.HdrRawLen).
const (
	HdrMsgID    = wire.HdrMsgID
	HdrVersion  = "Ferry-Load-Version"
	HdrLoad     = "Ferry-Load"
	HdrKind     = "Ferry-Load-Kind"
	HdrTable    = "Ferry-Table"
	HdrChunk    = "Ferry-Chunk"
	HdrPart     = "Ferry-Part"
	HdrLastPart = "Ferry-Last-Part"
	HdrLowSeq   = "Ferry-Low-Seq"
	HdrRows     = "Ferry-Rows"
	HdrChunks   = "Ferry-Chunks"
	HdrEstimate = "Ferry-Estimate"
	HdrChunkLo  = "Ferry-Chunk-Lo"
	HdrChunkHi  = "Ferry-Chunk-Hi"
	HdrUpper    = "Ferry-Upper"
	HdrTime     = "Ferry-Time"
	HdrTotal    = "Ferry-Total"
	HdrCodec    = wire.HdrCodec
	HdrRawLen   = wire.HdrRawLen
)

// Version is the load protocol version (header Ferry-Load-Version).
const Version = 1

// SubjectToken is the subject token after the prefix that every load
// message's subject has; format.ReservedSource keeps sources off it.
const SubjectToken = format.ReservedSource

// Limits.
const (
	// MaxIDLen bounds a load id.
	MaxIDLen = 128
	// MaxBeginLen bounds a begin message's JSON body.
	MaxBeginLen = 64 << 10
	// MaxReasonLen bounds a failed message's reason.
	MaxReasonLen = 4096
	// MaxKeyColumns bounds the columns of a key tuple.
	MaxKeyColumns = 32
	// MaxRawLen bounds a chunk body once decompressed (that of a wire
	// batch).
	MaxRawLen = wire.MaxRawLen
)

// Errors.
var (
	// ErrHeader means a load message whose headers are missing or invalid.
	ErrHeader = errors.New("load: invalid message headers")
	// ErrBody means a body that does not decode to what the headers say.
	ErrBody = errors.New("load: invalid message body")
	// ErrInvalid means a message that may not be encoded.
	ErrInvalid = errors.New("load: invalid message")
)

// Kind says what a load message is.
type Kind uint8

// Message kinds.
const (
	KindBegin Kind = 1 + iota
	KindChunk
	KindDone
	KindFailed
)

func (k Kind) String() string {
	switch k {
	case KindBegin:
		return "begin"
	case KindChunk:
		return "chunk"
	case KindDone:
		return "done"
	case KindFailed:
		return "failed"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind parses "begin", "chunk", "done" or "failed".
func ParseKind(s string) (Kind, error) {
	for k := KindBegin; k <= KindFailed; k++ {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: %s %q (want begin, chunk, done or failed)", ErrHeader, HdrKind, s)
}

// ValidID reports whether id may name a load: 1 to MaxIDLen of
// [A-Za-z0-9_.:-], first a letter or digit. (It appears in message ids and
// in receivers' status.)
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != ':' && c != '-') {
			return false
		}
	}
	return true
}

// Key is a key tuple: the text of each key column of a row, in key column
// order, as the source renders it (PostgreSQL's text output; a dump's
// field). Loaders use it to resume and to bound chunks; it is not the
// change files' key (which joins the columns, see SPEC.md).
type Key [][]byte

// AppendKey appends k to dst in its header form: each column as a format
// byte string (uvarint length, bytes), the whole base64url without padding.
func AppendKey(dst []byte, k Key) []byte {
	var raw []byte
	for _, c := range k {
		raw = binary.AppendUvarint(raw, uint64(len(c)))
		raw = append(raw, c...)
	}
	return base64.RawURLEncoding.AppendEncode(dst, raw)
}

// ParseKey parses a key tuple in header form.
func ParseKey(s string) (Key, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key tuple %q: not base64url without padding: %v", s, err)
	}
	var k Key
	for len(raw) > 0 {
		n, w := binary.Uvarint(raw)
		if w <= 0 || n > uint64(len(raw)-w) || n > format.MaxKeyLen {
			return nil, fmt.Errorf("key tuple %q: column %d: bad length", s, len(k))
		}
		if len(k) == MaxKeyColumns {
			return nil, fmt.Errorf("key tuple %q: more than %d columns", s, MaxKeyColumns)
		}
		if enc := binary.AppendUvarint(nil, n); w != len(enc) {
			return nil, fmt.Errorf("key tuple %q: column %d: length not in its shortest form", s, len(k))
		}
		k = append(k, raw[w:w+int(n)])
		raw = raw[w+int(n):]
	}
	if len(k) == 0 {
		return nil, fmt.Errorf("key tuple %q: no column", s)
	}
	return k, nil
}

// Strings returns k's columns as strings.
func (k Key) Strings() []string {
	out := make([]string, len(k))
	for i, c := range k {
		out[i] = string(c)
	}
	return out
}

// KeyOf returns the key tuple of the given column texts.
func KeyOf(cols ...string) Key {
	k := make(Key, len(cols))
	for i, c := range cols {
		k[i] = []byte(c)
	}
	return k
}

// Subject returns the subject of table's load messages:
// "<prefix>.load.<token>", where the token is the table name with every
// byte outside [A-Za-z0-9_-] written as '%' and two upper-case hex digits
// ("dbo.Orders" -> "dbo%2EOrders"), so that any table name is one subject
// token.
func Subject(prefix, table string) string {
	var b strings.Builder
	b.Grow(len(prefix) + len(SubjectToken) + 2 + len(table))
	b.WriteString(prefix)
	b.WriteString("." + SubjectToken + ".")
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(table); i++ {
		c := table[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String()
}

// SubjectFilter returns the subject filter that matches every load message
// of a stream with this prefix ("<prefix>.load.>").
func SubjectFilter(prefix string) string { return prefix + "." + SubjectToken + ".>" }

// IsSubject reports whether subject is a load subject under prefix.
func IsSubject(prefix, subject string) bool {
	return strings.HasPrefix(subject, prefix+"."+SubjectToken+".")
}

// Header describes one load message. Which fields a kind carries:
//
//	all:    Load, Kind, Table
//	begin:  Estimate, Time (body: Begin)
//	chunk:  Chunk, Part, Last, LowSeq, Rows, Codec, RawLen, Time, Lo (not on
//	        the first chunk), Hi and Total (on the last part), Upper (if the
//	        load has one)
//	done:   Rows (in all), Chunks, Time
//	failed: Time, and where a rerun resumes: Chunk (the next chunk number),
//	        Lo (nil: from the start), Upper, Total (body: the reason)
type Header struct {
	Load  string
	Kind  Kind
	Table string

	// Chunk numbers the load's chunks from 0; Part the messages of one
	// chunk from 0. Last marks the chunk's last part.
	Chunk uint64
	Part  int
	Last  bool
	// LowSeq is the chunk's low watermark: the stream's last sequence,
	// read before the chunk's snapshot was taken (0: the stream was empty).
	LowSeq uint64
	// Rows counts the rows of a chunk message, or (done) of the load.
	Rows int64
	// Chunks (done) counts the load's chunks.
	Chunks uint64
	// Total (a chunk's last part, failed) counts the rows the load sent so
	// far, this chunk included (rows sent again after a restart count
	// again): progress for receivers, nothing more.
	Total int64
	// Estimate (begin) is the loader's estimate of the rows to load, -1 if
	// unknown.
	Estimate int64
	Codec    wire.Codec
	RawLen   int
	// Lo is the chunk's exclusive lower bound (the previous chunk's last
	// key), nil if the chunk starts at the range's start (the table's first
	// key, or the load's from, inclusive); on a failed message, where a
	// rerun resumes. Hi (last part only) is the chunk's last key,
	// inclusive. Upper is the load's fixed upper bound, inclusive (nil:
	// none). Dumps use one-column tuples of record numbers.
	Lo, Hi, Upper Key
	// Time is when the message was made, Unix ns (chunk: when its snapshot
	// was taken).
	Time int64
}

// MsgID returns the message's de-duplication id: "<load>/begin",
// "<load>/<chunk>/<part>", "<load>/done" or "<load>/failed".
func (h *Header) MsgID() string {
	if h.Kind == KindChunk {
		return h.Load + "/" + strconv.FormatUint(h.Chunk, 10) + "/" + strconv.Itoa(h.Part)
	}
	return h.Load + "/" + h.Kind.String()
}

// Encode returns the message headers describing h, Nats-Msg-Id included.
func (h *Header) Encode() map[string][]string {
	m := map[string][]string{
		HdrMsgID:   {h.MsgID()},
		HdrVersion: {strconv.Itoa(Version)},
		HdrLoad:    {h.Load},
		HdrKind:    {h.Kind.String()},
		HdrTable:   {h.Table},
		HdrTime:    {strconv.FormatInt(h.Time, 10)},
	}
	key := func(name string, k Key) {
		if k != nil {
			m[name] = []string{string(AppendKey(nil, k))}
		}
	}
	switch h.Kind {
	case KindBegin:
		m[HdrEstimate] = []string{strconv.FormatInt(h.Estimate, 10)}
	case KindChunk:
		m[HdrChunk] = []string{strconv.FormatUint(h.Chunk, 10)}
		m[HdrPart] = []string{strconv.Itoa(h.Part)}
		if h.Last {
			m[HdrLastPart] = []string{"1"}
		}
		m[HdrLowSeq] = []string{strconv.FormatUint(h.LowSeq, 10)}
		m[HdrRows] = []string{strconv.FormatInt(h.Rows, 10)}
		m[HdrCodec] = []string{h.Codec.String()}
		m[HdrRawLen] = []string{strconv.Itoa(h.RawLen)}
		key(HdrChunkLo, h.Lo)
		if h.Last {
			key(HdrChunkHi, h.Hi)
			m[HdrTotal] = []string{strconv.FormatInt(h.Total, 10)}
		}
		key(HdrUpper, h.Upper)
	case KindFailed:
		m[HdrChunk] = []string{strconv.FormatUint(h.Chunk, 10)}
		m[HdrTotal] = []string{strconv.FormatInt(h.Total, 10)}
		key(HdrChunkLo, h.Lo)
		key(HdrUpper, h.Upper)
	case KindDone:
		m[HdrRows] = []string{strconv.FormatInt(h.Rows, 10)}
		m[HdrChunks] = []string{strconv.FormatUint(h.Chunks, 10)}
	}
	return m
}

// check reports what makes h impossible to encode or to accept, or nil.
func (h *Header) check() error {
	switch {
	case !ValidID(h.Load):
		return fmt.Errorf("load id %q: want 1-%d of [A-Za-z0-9_.:-], first a letter or digit", h.Load, MaxIDLen)
	case h.Kind < KindBegin || h.Kind > KindFailed:
		return fmt.Errorf("unknown kind %d", h.Kind)
	case len(h.Table) == 0 || len(h.Table) > format.MaxTableLen:
		return fmt.Errorf("table name of %d bytes (want 1-%d)", len(h.Table), format.MaxTableLen)
	case h.Time < 0:
		return fmt.Errorf("negative time %d", h.Time)
	}
	switch h.Kind {
	case KindChunk:
		switch {
		case h.Part < 0:
			return fmt.Errorf("part %d", h.Part)
		case h.Rows < 1:
			return fmt.Errorf("chunk message with %d rows (want at least 1)", h.Rows)
		case h.RawLen < 1 || h.RawLen > MaxRawLen:
			return fmt.Errorf("raw length %d (want 1-%d)", h.RawLen, MaxRawLen)
		case h.Codec > wire.CodecS2:
			return fmt.Errorf("unknown codec %d", h.Codec)
		case h.Last && h.Hi == nil:
			return fmt.Errorf("last part of chunk %d without its last key", h.Chunk)
		case !h.Last && h.Hi != nil:
			return fmt.Errorf("part %d of chunk %d is not the last but has a last key", h.Part, h.Chunk)
		case !h.Last && h.Total != 0:
			return fmt.Errorf("part %d of chunk %d is not the last but has a total", h.Part, h.Chunk)
		case h.Total < 0:
			return fmt.Errorf("total %d", h.Total)
		}
		for _, k := range []Key{h.Lo, h.Hi, h.Upper} {
			if err := checkKey(k); err != nil {
				return err
			}
		}
	case KindBegin:
		if h.Estimate < -1 {
			return fmt.Errorf("estimate %d (want -1 for unknown, or >= 0)", h.Estimate)
		}
	case KindDone:
		if h.Rows < 0 {
			return fmt.Errorf("done with %d rows", h.Rows)
		}
	case KindFailed:
		if h.Total < 0 {
			return fmt.Errorf("total %d", h.Total)
		}
		for _, k := range []Key{h.Lo, h.Upper} {
			if err := checkKey(k); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkKey(k Key) error {
	if k == nil {
		return nil
	}
	if len(k) == 0 || len(k) > MaxKeyColumns {
		return fmt.Errorf("key tuple of %d columns (want 1-%d)", len(k), MaxKeyColumns)
	}
	for i, c := range k {
		if len(c) > format.MaxKeyLen {
			return fmt.Errorf("key tuple column %d of %d bytes (max %d)", i, len(c), format.MaxKeyLen)
		}
	}
	return nil
}

// IsLoad reports whether message headers h are a load message's (they carry
// Ferry-Load-Kind). Receivers use it, with IsSubject, to route messages.
func IsLoad(h map[string][]string) bool { return len(h[HdrKind]) > 0 }

// ParseHeader reads a Header back from message headers, checking that
// every field its kind needs is present and consistent.
func ParseHeader(m map[string][]string) (Header, error) {
	get := func(k string) string {
		if v := m[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if v := get(HdrVersion); v != strconv.Itoa(Version) {
		return Header{}, fmt.Errorf("%w: %s %q, this build reads %d", ErrHeader, HdrVersion, v, Version)
	}
	var err error
	bad := func(k, why string) {
		if err == nil {
			err = fmt.Errorf("%w: %s %q: %s", ErrHeader, k, get(k), why)
		}
	}
	unum := func(k string) uint64 {
		v, perr := strconv.ParseUint(get(k), 10, 64)
		if perr != nil {
			bad(k, "want an unsigned integer")
		}
		return v
	}
	inum := func(k string, max int64) int64 {
		v, perr := strconv.ParseInt(get(k), 10, 64)
		if perr != nil || v < 0 || v > max {
			bad(k, "want an integer from 0 to "+strconv.FormatInt(max, 10))
		}
		return v
	}
	key := func(k string, required bool) Key {
		s, ok := m[k]
		if !ok || len(s) == 0 {
			if required {
				bad(k, "missing")
			}
			return nil
		}
		t, kerr := ParseKey(s[0])
		if kerr != nil {
			bad(k, kerr.Error())
		}
		return t
	}
	h := Header{Load: get(HdrLoad), Table: get(HdrTable)}
	kind, kerr := ParseKind(get(HdrKind))
	if kerr != nil {
		return Header{}, kerr
	}
	h.Kind = kind
	h.Time = inum(HdrTime, 1<<63-1)
	switch kind {
	case KindBegin:
		if get(HdrEstimate) == "-1" {
			h.Estimate = -1
		} else {
			h.Estimate = inum(HdrEstimate, 1<<63-1)
		}
	case KindChunk:
		h.Chunk = unum(HdrChunk)
		h.Part = int(inum(HdrPart, 1<<31-1))
		switch v := get(HdrLastPart); v {
		case "":
		case "1":
			h.Last = true
		default:
			bad(HdrLastPart, `want "1" or no header`)
		}
		h.LowSeq = unum(HdrLowSeq)
		h.Rows = inum(HdrRows, 1<<31-1)
		h.RawLen = int(inum(HdrRawLen, MaxRawLen))
		if c, cerr := wire.ParseCodec(get(HdrCodec)); cerr != nil {
			bad(HdrCodec, "unknown codec")
		} else {
			h.Codec = c
		}
		h.Lo = key(HdrChunkLo, false)
		h.Hi = key(HdrChunkHi, h.Last)
		h.Upper = key(HdrUpper, false)
		if h.Last {
			h.Total = inum(HdrTotal, 1<<63-1)
		}
	case KindFailed:
		h.Chunk = unum(HdrChunk)
		h.Total = inum(HdrTotal, 1<<63-1)
		h.Lo = key(HdrChunkLo, false)
		h.Upper = key(HdrUpper, false)
	case KindDone:
		h.Rows = inum(HdrRows, 1<<63-1)
		h.Chunks = unum(HdrChunks)
	}
	if err != nil {
		return Header{}, err
	}
	if cerr := h.check(); cerr != nil {
		return Header{}, fmt.Errorf("%w: %s: %v", ErrHeader, h.MsgID(), cerr)
	}
	if id := get(HdrMsgID); id != "" && id != h.MsgID() {
		return Header{}, fmt.Errorf("%w: %s %q does not match the message (%q)", ErrHeader, HdrMsgID, id, h.MsgID())
	}
	return h, nil
}

// CheckSubject checks that a message with headers h came on its table's
// subject under prefix.
func CheckSubject(prefix, subject string, h *Header) error {
	if want := Subject(prefix, h.Table); subject != want {
		return fmt.Errorf("%w: load %s of table %q on subject %q (want %q)", ErrHeader, h.Load, h.Table, subject, want)
	}
	return nil
}

// Begin is the JSON body of a begin message: what the load sends.
type Begin struct {
	// Table is the table's name in the change files (the Ferry-Table
	// header).
	Table string `json:"table"`
	// Input is where the rows come from: "postgresql", "jsonl" or "csv".
	Input string `json:"input"`
	// KeyColumns are the key's columns, in key order; VersionColumn the
	// row version column, "" if none.
	KeyColumns    []string `json:"key_columns"`
	VersionColumn string   `json:"version_column,omitempty"`
	// From and To restrict the load to keys in (From, To] (re-load of a
	// key range), as key tuples' column texts; absent = unbounded.
	From []string `json:"from,omitempty"`
	To   []string `json:"to,omitempty"`
	// Upper is the fixed upper bound decided at start: the largest key
	// (inclusive) the load sends; absent when the table was empty.
	Upper []string `json:"upper,omitempty"`
	// Estimate is the estimated number of rows, -1 if unknown.
	Estimate int64 `json:"estimate"`
	// ChunkRows is the most rows a chunk holds.
	ChunkRows int `json:"chunk_rows"`
	// Mark (dumps only) is the stream sequence taken before the dump was
	// made: every chunk's low watermark.
	Mark uint64 `json:"mark,omitempty"`
	// Started is when the load started.
	Started time.Time `json:"started"`
}

// EncodeBegin returns b's JSON body.
func EncodeBegin(b *Begin) ([]byte, error) {
	if err := checkBegin(b); err != nil {
		return nil, fmt.Errorf("%w: begin: %v", ErrInvalid, err)
	}
	out, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("load: encoding begin: %w", err)
	}
	if len(out) > MaxBeginLen {
		return nil, fmt.Errorf("%w: begin body of %d bytes (max %d)", ErrInvalid, len(out), MaxBeginLen)
	}
	return out, nil
}

// DecodeBegin decodes a begin message's body, checking it against h.
func DecodeBegin(h *Header, body []byte) (Begin, error) {
	var b Begin
	if len(body) > MaxBeginLen {
		return b, fmt.Errorf("%w: %s: begin body of %d bytes (max %d)", ErrBody, h.MsgID(), len(body), MaxBeginLen)
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Begin{}, fmt.Errorf("%w: %s: %v", ErrBody, h.MsgID(), err)
	}
	if err := checkBegin(&b); err != nil {
		return Begin{}, fmt.Errorf("%w: %s: %v", ErrBody, h.MsgID(), err)
	}
	if b.Table != h.Table {
		return Begin{}, fmt.Errorf("%w: %s: begin names table %q, headers %q", ErrBody, h.MsgID(), b.Table, h.Table)
	}
	return b, nil
}

func checkBegin(b *Begin) error {
	switch {
	case len(b.Table) == 0 || len(b.Table) > format.MaxTableLen:
		return fmt.Errorf("table name of %d bytes (want 1-%d)", len(b.Table), format.MaxTableLen)
	case len(b.KeyColumns) == 0 || len(b.KeyColumns) > MaxKeyColumns:
		return fmt.Errorf("%d key columns (want 1-%d)", len(b.KeyColumns), MaxKeyColumns)
	case b.Input != "postgresql" && b.Input != "jsonl" && b.Input != "csv":
		return fmt.Errorf("input %q (want postgresql, jsonl or csv)", b.Input)
	case b.ChunkRows < 1:
		return fmt.Errorf("chunk_rows %d (want >= 1)", b.ChunkRows)
	case b.Estimate < -1:
		return fmt.Errorf("estimate %d", b.Estimate)
	}
	for _, k := range [][]string{b.From, b.To, b.Upper} {
		if k != nil && len(k) != len(b.KeyColumns) {
			return fmt.Errorf("a key bound of %d columns for %d key columns", len(k), len(b.KeyColumns))
		}
	}
	return nil
}

// EncodeReason returns a failed message's body: reason, cut to MaxReasonLen
// bytes (at a UTF-8 boundary).
func EncodeReason(reason string) []byte {
	if len(reason) > MaxReasonLen {
		cut := MaxReasonLen
		for cut > 0 && reason[cut]&0xc0 == 0x80 {
			cut--
		}
		reason = reason[:cut]
	}
	return []byte(reason)
}

// DecodeReason returns a failed message's reason.
func DecodeReason(h *Header, body []byte) (string, error) {
	if len(body) > MaxReasonLen {
		return "", fmt.Errorf("%w: %s: reason of %d bytes (max %d)", ErrBody, h.MsgID(), len(body), MaxReasonLen)
	}
	return string(body), nil
}
