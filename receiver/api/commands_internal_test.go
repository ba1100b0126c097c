package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/internal/flatjson"
)

// A command request in the plain form decodes as encoding/json decodes it
// (json.Decoder with DisallowUnknownFields), and a batch splits into the
// elements json.Unmarshal finds.
func FuzzPlainRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"c1","table":"orders","key":"o-1","op":"insert","after":{"qty":1,"sku":"A 1"}}`,
		` {"id":"c1", "table":"orders","key":"o-1","op":"update","after":{ "qty": 1 },"version":7} x`,
		`{"id":"c1","origin":"svc"}`,
		`{"id":"c1","ID":"c2"}`,
		`{"id":"c1","id":"c2"}`,
		`{"id":"c\u00e9","after":"x"}`,
		`{"id":"c1","version":1e2}`,
		`[{"id":"a"} , {"id":"b","after":[1,"],"]} ,"x",[]]`,
		`[ ]`,
		`[{"id":"a"},]`,
		`[{"id":"a"}] x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want CommandRequest
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		werr := d.Decode(&want)
		if got, compact, ok := decodePlainRequest(b); ok {
			if werr != nil {
				t.Fatalf("plain decoding took %q, encoding/json refuses it: %v", b, werr)
			}
			if got.ID != want.ID || got.Table != want.Table || got.Key != want.Key || got.Op != want.Op ||
				got.Version != want.Version || !bytes.Equal(got.After, want.After) || (got.After == nil) != (want.After == nil) {
				t.Fatalf("%q: plain decoding %+v, encoding/json %+v", b, got, want)
			}
			var buf bytes.Buffer
			if compact && len(got.After) > 0 && (json.Compact(&buf, got.After) != nil || !bytes.Equal(buf.Bytes(), got.After)) {
				t.Fatalf("%q: after image %q said to be compact", b, got.After)
			}
		}
		var raws []json.RawMessage
		uerr := json.Unmarshal(b, &raws)
		els, ok := flatjson.Elements(b)
		if ok != (uerr == nil) {
			t.Fatalf("%q: Elements %v, json.Unmarshal %v", b, ok, uerr)
		}
		if !ok {
			return
		}
		if len(els) != len(raws) {
			t.Fatalf("%q: %d elements, json.Unmarshal %d", b, len(els), len(raws))
		}
		for i := range els {
			if !bytes.Equal(els[i], raws[i]) {
				t.Fatalf("%q: element %d %q, json.Unmarshal %q", b, i, els[i], raws[i])
			}
		}
	})
}

// The digest is the one every release recorded: a command submitted again
// after an upgrade is the same command.
func TestDigestUnchanged(t *testing.T) {
	old := func(c *command.Command) string {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%d\x00", c.Source, c.Table, c.Key, c.Op, c.Version)
		h.Write(c.After)
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	for _, c := range []command.Command{
		{Source: "shop", Table: "orders", Key: "o-1", Op: "insert", After: json.RawMessage(`{"qty":1}`)},
		{Source: "shop", Table: "clé", Key: "o\x00-1", Op: "update", After: json.RawMessage(`{}`), Version: 18446744073709551615},
		{Source: "s", Table: "t", Key: "k", Op: "delete", Version: 3},
	} {
		if got, want := digest(&c), old(&c); got != want {
			t.Errorf("digest(%+v) = %s, want %s", c, got, want)
		}
	}
}
