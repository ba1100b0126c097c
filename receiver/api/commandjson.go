package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrysync/ferry/format/flatjson"
)

// Command statuses in the plain form (internal/flatjson) are written by the
// receiver and read by the client without reflection, byte for byte and
// value for value as encoding/json writes and reads them: encoding them for
// the 202 and the GET ?ids= answer, and decoding them in a Go service, were
// ~7% of a write-back command's CPU. Anything else takes encoding/json.

// writeCommands answers with the commands' statuses (CommandBatchJSON).
func writeCommands(w http.ResponseWriter, status int, out []CommandJSON) {
	b := make([]byte, 0, 64+256*len(out))
	b = append(b, `{"commands":[`...)
	ok := len(out) > 0 // none: encoding/json leaves "commands" out
	for i := 0; ok && i < len(out); i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b, ok = appendCommandJSON(b, &out[i])
	}
	if !ok {
		writeJSON(w, status, CommandBatchJSON{Commands: out})
		return
	}
	writeBody(w, status, append(b, "]}\n"...))
}

// writeCommand answers with one command's status (CommandJSON).
func writeCommand(w http.ResponseWriter, status int, c *CommandJSON) {
	b, ok := appendCommandJSON(make([]byte, 0, 320), c)
	if !ok {
		writeJSON(w, status, c)
		return
	}
	writeBody(w, status, append(b, '\n'))
}

func appendCommandJSON(b []byte, c *CommandJSON) ([]byte, bool) {
	ok := true
	str := func(name, v string, omitEmpty bool) {
		if ok && (v != "" || !omitEmpty) {
			b = append(b, name...)
			b, ok = flatjson.AppendString(b, v)
		}
	}
	tm := func(name string, t *time.Time) {
		if ok && t != nil {
			b = append(append(b, name...), '"')
			var err error
			if b, err = t.AppendText(b); err != nil { // what Time.MarshalJSON writes between its quotes
				ok = false
				return
			}
			b = append(b, '"')
		}
	}
	uint := func(name string, v uint64) {
		if v != 0 {
			b = strconv.AppendUint(append(b, name...), v, 10)
		}
	}
	b = append(b, '{')
	str(`"id":`, c.ID, false)
	str(`,"state":`, c.State, false)
	str(`,"origin":`, c.Origin, true)
	str(`,"table":`, c.Table, true)
	str(`,"key":`, c.Key, true)
	str(`,"op":`, c.Op, true)
	tm(`,"submitted":`, c.Submitted)
	str(`,"source":`, c.Source, true)
	if !ok {
		return b, false
	}
	uint(`,"segment":`, c.Segment)
	if c.Offset != 0 {
		b = strconv.AppendInt(append(b, `,"offset":`...), c.Offset, 10)
	}
	uint(`,"change_id":`, c.ChangeID)
	uint(`,"version":`, c.Version)
	str(`,"reason":`, c.Reason, true)
	tm(`,"time":`, c.Time)
	return append(b, '}'), ok
}

// unmarshalResponse decodes a receiver's answer into out as json.Unmarshal
// does.
func unmarshalResponse(b []byte, out any) error {
	switch v := out.(type) {
	case *CommandBatchJSON:
		if decodeCommandBatchPlain(b, v) {
			return nil
		}
	case *CommandJSON:
		if o := flatjson.Open(b); decodeCommandPlain(&o, v) && o.Rest() {
			return nil
		}
	}
	return json.Unmarshal(b, out)
}

func decodeCommandBatchPlain(b []byte, out *CommandBatchJSON) bool {
	o := flatjson.Open(b)
	cmds := make([]CommandJSON, 0, len(b)/160) // a status is at least ~160 bytes
	seen := false                              // a field twice is left to encoding/json
	for o.Next() {
		if string(o.Key()) != "commands" || seen {
			o.Fail()
			break
		}
		seen = true
		o.Objects(func(e *flatjson.Object) {
			cmds = append(cmds, CommandJSON{})
			decodeCommandPlain(e, &cmds[len(cmds)-1])
		})
	}
	if !o.Rest() {
		return false
	}
	if seen {
		out.Commands = cmds // as json.Unmarshal: [] is an empty slice, not nil
	}
	return true
}

// decodeCommandPlain reads the members of o into c (false: not in the
// plain form; c is then partly written).
func decodeCommandPlain(o *flatjson.Object, c *CommandJSON) bool {
	x := *c // json.Unmarshal leaves the fields the document lacks as they were
	seen := 0
	tm := func() *time.Time {
		t := new(time.Time)
		if err := t.UnmarshalText(o.Bytes()); err != nil { // what Time.UnmarshalJSON does inside the quotes
			o.Fail()
		}
		return t
	}
	for o.Next() {
		f := 0
		switch string(o.Key()) {
		case "id":
			f, x.ID = 1, o.Str()
		case "state":
			f, x.State = 1<<1, o.Str()
		case "origin":
			f, x.Origin = 1<<2, o.Str()
		case "table":
			f, x.Table = 1<<3, o.Str()
		case "key":
			f, x.Key = 1<<4, o.Str()
		case "op":
			f, x.Op = 1<<5, o.Str()
		case "submitted":
			f, x.Submitted = 1<<6, tm()
		case "source":
			f, x.Source = 1<<7, o.Str()
		case "segment":
			f, x.Segment = 1<<8, o.Uint()
		case "offset":
			f, x.Offset = 1<<9, o.Int()
		case "change_id":
			f, x.ChangeID = 1<<10, o.Uint()
		case "version":
			f, x.Version = 1<<11, o.Uint()
		case "reason":
			f, x.Reason = 1<<12, o.Str()
		case "time":
			f, x.Time = 1<<13, tm()
		default:
			o.Fail()
		}
		o.Once(&seen, f)
	}
	if !o.OK() {
		return false
	}
	*c = x
	return true
}

// appendRequestPlain appends a command request as json.Marshal writes it,
// if it is in the plain form.
func appendRequestPlain(b []byte, r *CommandRequest) ([]byte, bool) {
	ok := true
	str := func(name, v string) {
		if ok {
			b = append(b, name...)
			b, ok = flatjson.AppendString(b, v)
		}
	}
	b = append(b, '{')
	str(`"id":`, r.ID)
	str(`,"table":`, r.Table)
	str(`,"key":`, r.Key)
	str(`,"op":`, r.Op)
	if !ok {
		return b, false
	}
	if len(r.After) > 0 {
		if !flatjson.PlainRaw(r.After) {
			return b, false
		}
		b = append(append(b, `,"after":`...), r.After...)
	}
	if r.Version != 0 {
		b = strconv.AppendUint(append(b, `,"version":`...), r.Version, 10)
	}
	return append(b, '}'), true
}

// marshalRequest encodes a client's POST /v1/commands body as json.Marshal
// does.
func marshalRequest(v any) ([]byte, error) {
	switch r := v.(type) {
	case CommandRequest:
		if b, ok := appendRequestPlain(make([]byte, 0, 256), &r); ok {
			return b, nil
		}
	case []CommandRequest:
		b := append(make([]byte, 0, 2+160*len(r)), '[')
		ok := true
		for i := 0; ok && i < len(r); i++ {
			if i > 0 {
				b = append(b, ',')
			}
			b, ok = appendRequestPlain(b, &r[i])
		}
		if ok && r != nil {
			return append(b, ']'), nil
		}
	}
	return json.Marshal(v)
}
