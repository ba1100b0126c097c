// Package command holds the write-back command as it travels from a
// service to the legacy (SPEC.md, "Write-back commands"): one JSON document
// per command, the body of a JetStream message on the commands stream and a
// line of an inbox file on the legacy host. Receivers publish commands
// (receiver/api), the legacy host's agent delivers them (shipper/inbox); both
// validate them here, so a command has one set of rules.
//
// A command's outcome does not travel back through this package: the legacy
// records it in its change files (a transaction carrying the command id, or
// a rejection frame; SPEC.md, "Write-back records").
package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/flatjson"
)

// Limits of a command.
const (
	// MaxIDLen bounds a command id (ids are NATS message ids and file-safe).
	MaxIDLen = 128
	// DefaultMaxImage is the default bound of a command's after image.
	DefaultMaxImage = 64 << 10
	// MaxImage is the largest after image any configuration allows: a
	// command must fit one NATS message with room to spare.
	MaxImage = 512 << 10
)

// Ops a command may carry: what the legacy is asked to do to the row.
const (
	OpInsert = "insert" // the row must not exist
	OpUpdate = "update" // the row must exist at Version
	OpUpsert = "upsert" // at Version if Version > 0, else whatever it holds
	OpDelete = "delete" // the row must exist at Version
)

// ErrInvalid means a command breaks a rule of this package; the message
// names the field.
var ErrInvalid = errors.New("command: invalid")

// Command is one write a service asks the legacy to make.
type Command struct {
	// ID is the service's idempotency key: the same id is the same command.
	ID string `json:"id"`
	// Origin is the submitting service (format.Tx.Origin of the result).
	Origin string `json:"origin"`
	// Source is the legacy source that masters Table.
	Source string `json:"source"`
	Table  string `json:"table"`
	Key    string `json:"key"`
	Op     string `json:"op"`
	// After is the new row image, a JSON document; absent for a delete.
	After json.RawMessage `json:"after,omitempty"`
	// Version is the row version the service read (format.Change.Version);
	// 0 means none (an insert, or an upsert without a check).
	Version uint64 `json:"version,omitempty"`
	// Submitted is when the receiver accepted the command.
	Submitted time.Time `json:"submitted"`
	// Seq is the command's sequence in the commands stream, set by the
	// agent in inbox files (0 on the stream itself).
	Seq uint64 `json:"seq,omitempty"`
}

// ValidID reports whether id may be a command id: 1 to MaxIDLen bytes of
// ASCII letters, digits, '_', '-', '.' and ':', starting with a letter or a
// digit (a UUID, a ULID or "service:sequence" fit; "." and ".." do not,
// they are path segments).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	if c := id[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// Validate checks c against the rules of SPEC.md's "Write-back commands";
// maxImage bounds After (0: DefaultMaxImage). The error names the field.
func (c *Command) Validate(maxImage int) error { return c.validate(maxImage, false) }

// validate is Validate, without checking again that After is JSON if
// afterValid (the plain decoding checked it).
func (c *Command) validate(maxImage int, afterValid bool) error {
	if maxImage <= 0 {
		maxImage = DefaultMaxImage
	}
	bad := func(f string, args ...any) error { return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(f, args...)) }
	switch {
	case !ValidID(c.ID):
		return bad("id %q: want 1-%d of [A-Za-z0-9_.:-] starting with a letter or digit (a UUID fits)", clip(c.ID), MaxIDLen)
	case c.Origin == "" || !format.ValidSource(c.Origin):
		return bad("origin %q: want 1-%d of [A-Za-z0-9_-]", clip(c.Origin), format.MaxSourceLen)
	case !format.ValidSource(c.Source):
		return bad("source %q: want 1-%d of [A-Za-z0-9_-]", clip(c.Source), format.MaxSourceLen)
	case c.Table == "" || len(c.Table) > format.MaxTableLen || !utf8.ValidString(c.Table):
		return bad("table: want 1-%d bytes of UTF-8", format.MaxTableLen)
	case c.Key == "" || len(c.Key) > format.MaxKeyLen || !utf8.ValidString(c.Key):
		return bad("key: want 1-%d bytes of UTF-8", format.MaxKeyLen)
	}
	switch c.Op {
	case OpInsert, OpUpdate, OpUpsert, OpDelete:
	default:
		return bad("op %q: want insert, update, upsert or delete", clip(c.Op))
	}
	if c.Op == OpDelete {
		if len(c.After) > 0 {
			return bad("a delete carries no after image")
		}
	} else {
		switch {
		case len(bytes.TrimSpace(c.After)) == 0:
			return bad("%s without an after image", c.Op)
		case len(c.After) > maxImage:
			return bad("after image of %d bytes (max %d)", len(c.After), maxImage)
		case !afterValid && !json.Valid(c.After):
			return bad("after image is not a JSON document")
		}
	}
	switch {
	case c.Op == OpInsert && c.Version != 0:
		return bad("an insert reads no version (got %d)", c.Version)
	case (c.Op == OpUpdate || c.Op == OpDelete) && c.Version == 0:
		return bad("%s needs the row version it read (version >= 1)", c.Op)
	}
	return nil
}

// clip shortens s for an error message: hostile input never fills a log.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Marshal encodes c as one line of JSON (no newline inside, one at the end).
func Marshal(c *Command) ([]byte, error) {
	return Append(make([]byte, 0, 256+len(c.After)), c)
}

// Append appends c to dst as Marshal encodes it: the commands of a batch
// can share one buffer.
func Append(dst []byte, c *Command) ([]byte, error) {
	if b, ok := appendPlain(dst, c); ok {
		return append(b, '\n'), nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return dst, fmt.Errorf("command: encoding %s: %w", c.ID, err)
	}
	return append(append(dst, b...), '\n'), nil
}

// appendPlain appends c as json.Marshal writes it, if every field is in the
// plain form (flatjson): false otherwise, and the caller uses json.Marshal.
func appendPlain(b []byte, c *Command) ([]byte, bool) {
	ok := true
	str := func(name, v string) {
		if ok {
			b = append(b, name...)
			b, ok = flatjson.AppendString(b, v)
		}
	}
	b = append(b, '{')
	str(`"id":`, c.ID)
	str(`,"origin":`, c.Origin)
	str(`,"source":`, c.Source)
	str(`,"table":`, c.Table)
	str(`,"key":`, c.Key)
	str(`,"op":`, c.Op)
	if !ok {
		return b, false
	}
	if len(c.After) > 0 {
		if !flatjson.PlainRaw(c.After) {
			return b, false
		}
		b = append(b, `,"after":`...)
		b = append(b, c.After...)
	}
	if c.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, c.Version, 10)
	}
	b = append(b, `,"submitted":"`...)
	b, err := c.Submitted.AppendText(b) // what Time.MarshalJSON writes between its quotes
	if err != nil {
		return b, false
	}
	b = append(b, '"')
	if c.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, c.Seq, 10)
	}
	return append(b, '}'), true
}

// Unmarshal decodes one command and validates it (maxImage as in Validate).
func Unmarshal(b []byte, maxImage int) (Command, error) {
	c, plain := decodePlain(b)
	if !plain {
		c = Command{}
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&c); err != nil {
			return Command{}, fmt.Errorf("%w: not a command document: %v", ErrInvalid, err)
		}
	}
	if maxImage <= 0 {
		maxImage = MaxImage
	}
	if err := c.validate(maxImage, plain); err != nil {
		return Command{}, err
	}
	return c, nil
}

// Fields of a command document, as bits (a field seen twice is left to
// encoding/json).
const (
	fID = 1 << iota
	fOrigin
	fSource
	fTable
	fKey
	fOp
	fAfter
	fVersion
	fSubmitted
	fSeq
)

// decodePlain decodes a command document in the plain form (flatjson) as
// json.Decoder with DisallowUnknownFields would: false if it is not in
// that form, and the caller decodes it with encoding/json.
func decodePlain(b []byte) (Command, bool) {
	var c Command
	o := flatjson.Open(b)
	seen := 0
	for o.Next() {
		var f int
		switch string(o.Key()) {
		case "id":
			f, c.ID = fID, o.Str()
		case "origin":
			f, c.Origin = fOrigin, o.Str()
		case "source":
			f, c.Source = fSource, o.Str()
		case "table":
			f, c.Table = fTable, o.Str()
		case "key":
			f, c.Key = fKey, o.Str()
		case "op":
			f, c.Op = fOp, o.Str()
		case "after":
			raw, _ := o.Raw()
			f, c.After = fAfter, append(json.RawMessage(nil), raw...)
		case "version":
			f, c.Version = fVersion, o.Uint()
		case "submitted":
			f = fSubmitted
			if err := c.Submitted.UnmarshalText(o.Bytes()); err != nil { // what Time.UnmarshalJSON does inside the quotes
				o.Fail()
			}
		case "seq":
			f, c.Seq = fSeq, o.Uint()
		default:
			o.Fail()
		}
		o.Once(&seen, f)
	}
	return c, o.OK()
}

// Stream defaults: commands travel on their own stream, not on the change
// stream, whose subjects (<prefix>.>) every receiver consumes.
const (
	DefaultStream = "FERRY_CMD"
	DefaultPrefix = "ferry_cmd"
)

// Subject is the subject of the commands for source: <prefix>.<source>.
func Subject(prefix, source string) string { return prefix + "." + source }
