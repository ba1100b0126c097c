// Package flatjson reads and writes the flat JSON objects of the write-back
// hot paths (a command, a service's command request) without reflection:
// encoding/json cost ~15% of the CPU of a write-back command, decoding each
// command three times on its way (receiver, agent, legacy).
//
// It handles the plain form only: keys spelt exactly, strings of valid UTF-8
// without escapes or control characters, unsigned integers, and objects or
// arrays taken raw. Anything else makes it fail, and the caller decodes or
// encodes the document with encoding/json instead: encoding/json stays the
// authority on what a document means and on every error message. What the
// plain form accepts, encoding/json accepts with the same result
// (fuzz-tested by its callers against encoding/json). A key twice in one
// object is not the plain form either (encoding/json keeps the last one):
// a caller marks each key it reads with Object.Once.
package flatjson

import (
	"encoding/json"
	"unicode/utf8"
)

// Object reads the members of one JSON object in order. The zero Object has
// failed.
//
//	o := flatjson.Open(b)
//	for o.Next() {
//		switch string(o.Key()) {
//		case "id":
//			id = o.Str()
//		default:
//			o.Fail()
//		}
//	}
//	if !o.OK() { /* encoding/json */ }
type Object struct {
	b     []byte
	valid bool // b is known to be valid JSON
	i     int
	key   []byte
	str   string // b as a string, made on the first Str: one allocation for every string of the object
	bad   bool
	done  bool
	end   int
}

// Open starts reading the object b begins with (after whitespace). What
// follows the object is not read, as json.Decoder does not read it.
func Open(b []byte) Object {
	o := Object{b: b}
	o.open()
	return o
}

// OpenValid is Open for a b known to be valid JSON (json.Valid): its raw
// values are not checked again.
func OpenValid(b []byte) Object {
	o := Object{b: b, valid: true}
	o.open()
	return o
}

func (o *Object) open() {
	o.ws()
	if o.i >= len(o.b) || o.b[o.i] != '{' {
		o.bad = true
		return
	}
	o.i++
	o.ws()
	if o.i < len(o.b) && o.b[o.i] == '}' {
		o.done, o.end = true, o.i+1
	}
}

// Objects reads an array value whose elements are all objects: fn reads
// each element (Next until false) as an Object of its own; an element not
// read whole, or not an object, fails the object.
func (o *Object) Objects(fn func(e *Object)) {
	b := o.b
	if o.i >= len(b) || b[o.i] != '[' {
		o.bad = true
		return
	}
	o.i++
	o.ws()
	if o.i < len(b) && b[o.i] == ']' {
		o.i++
		return
	}
	for {
		// Each element reads its own bytes: its strings share a copy of
		// the element, not of the whole document.
		end, _, ok := extent(b, o.i)
		if !ok {
			o.bad = true
			return
		}
		e := Object{b: b[o.i:end], valid: o.valid}
		if e.open(); !e.bad {
			fn(&e)
		}
		if !e.OK() || e.end != len(e.b) {
			o.bad = true
			return
		}
		o.i = end
		o.ws()
		switch {
		case o.i < len(b) && b[o.i] == ',':
			o.i++
			o.ws()
		case o.i < len(b) && b[o.i] == ']':
			o.i++
			return
		default:
			o.bad = true
			return
		}
	}
}

// Next moves to the next member: false at the end of the object, or once
// the object failed (OK tells which). The member's value must be read (or
// the object failed) before the next call.
func (o *Object) Next() bool {
	if o.bad || o.done {
		return false
	}
	if o.key != nil { // after a value: ',' or '}'
		o.ws()
		switch {
		case o.i < len(o.b) && o.b[o.i] == ',':
			o.i++
			o.ws()
		case o.i < len(o.b) && o.b[o.i] == '}':
			o.done, o.end = true, o.i+1
			return false
		default:
			o.bad = true
			return false
		}
	}
	k, ok := o.plainString()
	if !ok {
		o.bad = true
		return false
	}
	o.ws()
	if o.i >= len(o.b) || o.b[o.i] != ':' {
		o.bad = true
		return false
	}
	o.i++
	o.ws()
	o.key = k
	return true
}

// Key is the current member's key (valid until the next Next).
func (o *Object) Key() []byte { return o.key }

// Fail marks the object as not in the plain form (an unknown key, a value
// of another type): the caller falls back to encoding/json.
func (o *Object) Fail() { o.bad = true }

// Once marks bit in seen, the keys a caller has read, and fails the object
// if it was marked already: a key twice is not the plain form
// (encoding/json keeps the last one).
func (o *Object) Once(seen *int, bit int) {
	if *seen&bit != 0 {
		o.bad = true
	}
	*seen |= bit
}

// OK reports whether the whole object was read in the plain form.
func (o *Object) OK() bool { return !o.bad && o.done }

// End is the offset just after the object's closing brace (once OK).
func (o *Object) End() int { return o.end }

// Str reads a string value. It shares one copy of the input with the
// object's other strings.
func (o *Object) Str() string {
	start := o.i + 1
	v, ok := o.plainString()
	if !ok {
		o.bad = true
		return ""
	}
	if o.str == "" {
		o.str = string(o.b)
	}
	return o.str[start : start+len(v)]
}

// Bytes reads a string value as Str does, without copying it: it aliases
// the input.
func (o *Object) Bytes() []byte {
	v, ok := o.plainString()
	if !ok {
		o.bad = true
	}
	return v
}

// Uint reads an unsigned integer: digits only, no leading zero, no
// fraction or exponent, within uint64.
func (o *Object) Uint() uint64 {
	b, i := o.b, o.i
	if i >= len(b) || b[i] < '0' || b[i] > '9' || (b[i] == '0' && i+1 < len(b) && b[i+1] >= '0' && b[i+1] <= '9') {
		o.bad = true
		return 0
	}
	var n uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (1<<64-1-d)/10 {
			o.bad = true
			return 0
		}
		n = n*10 + d
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		o.bad = true
		return 0
	}
	o.i = i
	return n
}

// Int reads a signed integer: Uint's form with an optional '-', within
// int64.
func (o *Object) Int() int64 {
	neg := o.i < len(o.b) && o.b[o.i] == '-'
	if neg {
		o.i++
	}
	n := o.Uint()
	switch {
	case o.bad:
		return 0
	case neg && n <= 1<<63:
		return -int64(n)
	case !neg && n < 1<<63:
		return int64(n)
	}
	o.bad = true
	return 0
}

// Rest reports whether nothing but whitespace follows the object (as
// json.Unmarshal requires).
func (o *Object) Rest() bool {
	if !o.OK() {
		return false
	}
	o.i = o.end
	o.ws()
	return o.i == len(o.b)
}

// Raw reads an object or array value as it is written (valid JSON, not
// copied: it aliases the input). compact reports that it has no whitespace
// outside its strings, i.e. json.Compact would not change it.
func (o *Object) Raw() (raw []byte, compact bool) {
	b, start := o.b, o.i
	end, compact, ok := extent(b, start)
	if !ok {
		o.bad = true
		return nil, false
	}
	raw = b[start:end]
	if !o.valid && !json.Valid(raw) {
		o.bad = true
		return nil, false
	}
	o.i = end
	return raw, compact
}

// extent finds the end of the object or array starting at b[start]
// (matching brackets outside strings; not a validation), and whether it
// has whitespace outside its strings.
func extent(b []byte, start int) (end int, compact, ok bool) {
	if start >= len(b) || (b[start] != '{' && b[start] != '[') {
		return 0, false, false
	}
	depth, compact := 0, true
	for i := start; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1, compact, true
			}
		case ' ', '\t', '\n', '\r':
			compact = false
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		}
	}
	return 0, false, false
}

// plainString reads a string without escapes or control characters, of
// valid UTF-8 (encoding/json would replace invalid bytes), and returns its
// contents.
func (o *Object) plainString() ([]byte, bool) {
	b, i := o.b, o.i
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	i++
	start, ascii := i, true
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			break
		}
		if c < 0x20 || c == '\\' {
			return nil, false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if i >= len(b) {
		return nil, false
	}
	v := b[start:i]
	if !ascii && !utf8.Valid(v) {
		return nil, false
	}
	o.i = i + 1
	return v, true
}

func (o *Object) ws() {
	for o.i < len(o.b) {
		switch o.b[o.i] {
		case ' ', '\t', '\n', '\r':
			o.i++
		default:
			return
		}
	}
}

// AppendString appends s as a JSON string as encoding/json writes it, if
// it can without escaping anything (printable ASCII but '"', '\\' and the
// HTML characters encoding/json escapes): false otherwise, and dst is
// unchanged.
func AppendString(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return dst, false
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"'), true
}

// PlainRaw reports whether encoding/json writes the raw value v
// (json.RawMessage) as it is: valid, compact, and with nothing it escapes
// (the HTML characters, and conservatively any non-ASCII byte).
func PlainRaw(v []byte) bool {
	in := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&':
			return false
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return json.Valid(v)
}

// Elements returns the elements of the JSON array b as json.Unmarshal into
// []json.RawMessage would (each as written, without the whitespace around
// it; aliasing b): false if b is not a valid JSON array.
func Elements(b []byte) ([][]byte, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	i := 0
	skip := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
	}
	skip()
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i++
	skip()
	var out [][]byte
	if b[i] == ']' {
		return out, true
	}
	// Valid JSON: an element ends at a ',' or the ']' outside any string
	// or nested value; whitespace before it is not the element's.
	for start, depth := i, 0; ; i++ {
		switch b[i] {
		case '{', '[':
			depth++
		case '}':
			depth--
		case ']':
			if depth == 0 {
				return append(out, trimRight(b[start:i])), true
			}
			depth--
		case ',':
			if depth == 0 {
				out = append(out, trimRight(b[start:i]))
				i++
				skip()
				start, i = i, i-1
			}
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		}
	}
}

func trimRight(b []byte) []byte {
	for len(b) > 0 {
		switch b[len(b)-1] {
		case ' ', '\t', '\n', '\r':
			b = b[:len(b)-1]
		default:
			return b
		}
	}
	return b
}
