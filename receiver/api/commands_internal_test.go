package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/format/flatjson"
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
		if json.Valid(b) {
			if _, _, ok := decodePlainRequest(b, false); ok {
				if got, _, vok := decodePlainRequest(b, true); !vok || got.ID != want.ID {
					t.Fatalf("%q: decoded as valid JSON: %+v, %v", b, got, vok)
				}
			}
		}
		if got, compact, ok := decodePlainRequest(b, false); ok {
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

// Statuses and requests in the plain form are written byte for byte as
// json.Marshal writes them, and statuses read as json.Unmarshal reads them.
func FuzzPlainStatus(f *testing.F) {
	f.Add(`{"commands":[{"id":"c1","state":"applied","origin":"svc","table":"orders","key":"o-1","op":"insert","submitted":"2026-12-04T03:04:05.1Z","source":"shop","segment":3,"offset":45,"change_id":9,"version":2,"time":"2026-12-04T03:04:05.2+01:00"},{"id":"c2","state":"pending"}]}`+"\n",
		"c1", "rejected", "no <row>", uint64(3), int64(-45), int64(1700000000), int64(5), []byte(`{"a":1}`))
	f.Add(`{"commands":[]}`, "c1", "", "", uint64(0), int64(0), int64(0), int64(0), []byte(nil))
	f.Add(`{"commands":[{"id":"c1","extra":1}],"code":"x"}`, "clé", "pending", "", uint64(1), int64(1), int64(-1), int64(0), []byte(`{ "a" : 1 }`))
	f.Add(`{"id":"c1","state":"applied","time":null} `, "c\"1", "applied", "", uint64(1), int64(1), int64(300000000000), int64(0), []byte(`[1,"<"]`))
	f.Fuzz(func(t *testing.T, doc, id, state, reason string, seg uint64, off, sec, nsec int64, after []byte) {
		b := []byte(doc)
		var wb, gb CommandBatchJSON
		werr := json.Unmarshal(b, &wb)
		if decodeCommandBatchPlain(b, &gb) {
			if werr != nil || !reflect.DeepEqual(gb.Commands, wb.Commands) || (gb.Commands == nil) != (wb.Commands == nil) {
				t.Fatalf("%q: plain %+v, json.Unmarshal %+v (%v)", b, gb, wb, werr)
			}
		}
		var wc, gc CommandJSON
		werr = json.Unmarshal(b, &wc)
		if o := flatjson.Open(b); decodeCommandPlain(&o, &gc) && o.Rest() {
			if werr != nil || !reflect.DeepEqual(gc, wc) {
				t.Fatalf("%q: plain %+v, json.Unmarshal %+v (%v)", b, gc, wc, werr)
			}
		}
		tm := time.Unix(sec, nsec).In(time.FixedZone("", int(off%86400)))
		cs := []CommandJSON{
			{ID: id, State: state, Origin: "svc", Table: "t", Key: id, Op: "insert", Submitted: &tm, Source: "s", Segment: seg, Offset: off, ChangeID: seg, Version: seg, Reason: reason, Time: &tm},
			{ID: id, State: state},
		}
		for i := range cs {
			if got, ok := appendCommandJSON(nil, &cs[i]); ok {
				if want, err := json.Marshal(&cs[i]); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("plain %q, json.Marshal %q (%v)", got, want, err)
				}
			}
		}
		reqs := []CommandRequest{{ID: id, Table: state, Key: reason, Op: "update", After: after, Version: seg}, {ID: id, Op: "delete"}}
		for _, v := range []any{reqs[0], reqs} {
			want, werr := json.Marshal(v)
			got, gerr := marshalRequest(v)
			if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
				t.Fatalf("marshalRequest %q, %v; json.Marshal %q, %v", got, gerr, want, werr)
			}
		}
	})
}

// The receiver's answers take the plain form and read back whole through
// the client's decoding.
func TestPlainStatusRoundTrip(t *testing.T) {
	sub, at := time.Now().UTC(), time.Unix(1700000000, 5).UTC()
	cs := []CommandJSON{
		{ID: "c1", State: "applied", Origin: "svc", Table: "orders", Key: "o-1", Op: "insert", Submitted: &sub, Source: "shop", Segment: 3, Offset: 45, ChangeID: 9, Version: 2, Time: &at},
		{ID: "c2", State: StateUnknown},
	}
	rec := httptest.NewRecorder()
	writeCommands(rec, http.StatusOK, cs)
	want, _ := json.Marshal(CommandBatchJSON{Commands: cs})
	if got := rec.Body.Bytes(); !bytes.Equal(got, append(want, '\n')) || rec.Header().Get("Content-Length") != strconv.Itoa(len(got)) {
		t.Fatalf("writeCommands = %q (%s bytes), want %q", got, rec.Header().Get("Content-Length"), want)
	}
	var back CommandBatchJSON
	if !decodeCommandBatchPlain(rec.Body.Bytes(), &back) {
		t.Fatalf("%q: not read in the plain form", rec.Body.Bytes())
	}
	if err := unmarshalResponse(rec.Body.Bytes(), &back); err != nil || len(back.Commands) != 2 || !back.Commands[0].Time.Equal(at) || back.Commands[1].State != StateUnknown {
		t.Fatalf("read back %+v, %v", back, err)
	}
}

// readBody reads what io.ReadAll reads, whatever size was announced.
func TestReadBody(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 4096, 1<<20 + 3} {
		body := bytes.Repeat([]byte("x"), n)
		for _, size := range []int64{-1, 0, int64(n), int64(n) / 2, int64(n) * 2, 1 << 40} {
			got, err := readBody(bytes.NewReader(body), size)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%d bytes announced as %d: read %d, %v", n, size, len(got), err)
			}
		}
	}
}
