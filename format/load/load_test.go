package load_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/klauspost/compress/zstd"
)

var update = flag.Bool("update", false, "rewrite testdata/messages.json from the code")

// vector is one golden message: what a loader sends and what a receiver
// must read back from it.
type vector struct {
	Name    string              `json:"name"`
	What    string              `json:"what"`
	Subject string              `json:"subject"`
	Headers map[string][]string `json:"headers"`
	// BodyHex is the message body; for a chunk with codec none it is the
	// rows' transaction frame itself (SPEC.md, sections 6 and 7).
	BodyHex string `json:"body_hex"`
	// ExactBody says the body must be reproduced byte for byte (codec
	// none, JSON); compressed bodies are checked by decoding only (a
	// compressor may produce other bytes for the same input).
	ExactBody bool `json:"exact_body"`
	// Decoded is what the message holds.
	Begin  *load.Begin `json:"begin,omitempty"`
	Rows   []row       `json:"rows,omitempty"`
	Reason string      `json:"reason,omitempty"`
}

type row struct {
	Key     string `json:"key"`
	After   string `json:"after"`
	Op      string `json:"op"`
	Version uint64 `json:"version,omitempty"`
}

const (
	loadID = "orders-3f2a9c1e-m4k2"
	prefix = "ferry"
	t0     = int64(1767225600000000000) // 2026-01-01T00:00:00Z
)

// messages returns the golden messages: header, body rows, and codec.
func messages() []struct {
	name, what string
	h          load.Header
	begin      *load.Begin
	tx         *format.Tx
	reason     string
} {
	rows := func(rs ...format.Change) *format.Tx {
		for i := range rs {
			rs[i].Table = "orders"
			if rs[i].Op == 0 {
				rs[i].Op = format.OpUpsert
			}
		}
		return &format.Tx{CommitTime: t0 + 2e6, ID: loadID, Changes: rs}
	}
	type msg = struct {
		name, what string
		h          load.Header
		begin      *load.Begin
		tx         *format.Tx
		reason     string
	}
	base := load.Header{Load: loadID, Table: "orders"}
	with := func(f func(h *load.Header)) load.Header { h := base; f(&h); return h }
	return []msg{
		{name: "begin", what: "a load of table orders starts: key column id, version column rev, upper bound 1207, about 3 rows",
			h: with(func(h *load.Header) { h.Kind = load.KindBegin; h.Estimate = 3; h.Time = t0 }),
			begin: &load.Begin{Table: "orders", Input: "postgresql", KeyColumns: []string{"id"}, VersionColumn: "rev",
				Upper: []string{"1207"}, Estimate: 3, ChunkRows: 2, Started: time.Unix(0, t0).UTC()}},
		{name: "chunk-0-part-0", what: "chunk 0, part 0 (not the last): two rows, one with a row version; low watermark 41; no codec",
			h: with(func(h *load.Header) {
				h.Kind, h.Chunk, h.Part, h.LowSeq, h.Codec, h.Time, h.Upper = load.KindChunk, 0, 0, 41, wire.CodecNone, t0+2e6, load.KeyOf("1207")
			}),
			tx: rows(format.Change{Key: []byte("7"), After: []byte(`{"id":7,"status":"new","rev":3}`), Version: 3},
				format.Change{Key: []byte("42"), After: []byte(`{"id":42,"status":"paid","rev":1}`), Version: 1})},
		{name: "chunk-0-part-1", what: "chunk 0, part 1, the last: one row; the chunk's last key is 1200",
			h: with(func(h *load.Header) {
				h.Kind, h.Chunk, h.Part, h.Last, h.LowSeq, h.Codec, h.Time = load.KindChunk, 0, 1, true, 41, wire.CodecNone, t0+2e6
				h.Hi, h.Upper, h.Total = load.KeyOf("1200"), load.KeyOf("1207"), 3
			}),
			tx: rows(format.Change{Key: []byte("1200"), After: []byte(`{"id":1200,"status":"sent","rev":9}`), Version: 9})},
		{name: "chunk-1-zstd", what: "chunk 1 after key 1200, zstd-compressed, one part: low watermark 57",
			h: with(func(h *load.Header) {
				h.Kind, h.Chunk, h.Part, h.Last, h.LowSeq, h.Codec, h.Time = load.KindChunk, 1, 0, true, 57, wire.CodecZstd, t0+3e6
				h.Lo, h.Hi, h.Upper, h.Total = load.KeyOf("1200"), load.KeyOf("1207"), load.KeyOf("1207"), 4
			}),
			tx: rows(format.Change{Key: []byte("1207"), After: []byte(`{"id":1207,"status":"new","rev":2}`), Version: 2})},
		{name: "chunk-composite-s2", what: "a composite key (order_lines, key columns order_id and line_no joined by '/'), s2, no versions",
			h: load.Header{Load: "order_lines-0a1b2c3d-m4k2", Table: "order_lines", Kind: load.KindChunk, Last: true, LowSeq: 0,
				Codec: wire.CodecS2, Time: t0, Lo: load.KeyOf("1207", "3"), Hi: load.KeyOf("1207", "4"), Total: 1},
			tx: &format.Tx{CommitTime: t0, ID: "order_lines-0a1b2c3d-m4k2", Changes: []format.Change{{
				Table: "order_lines", Op: format.OpUpsert, Key: []byte("1207/4"), After: []byte(`{"order_id":1207,"line_no":4,"qty":1}`)}}}},
		{name: "done", what: "the load sent 4 rows in 2 chunks",
			h: with(func(h *load.Header) { h.Kind, h.Rows, h.Chunks, h.Time = load.KindDone, 4, 2, t0+4e6 })},
		{name: "failed", what: "a load that gave up after chunk 0: a rerun resumes with chunk 1 after key 1200",
			h: with(func(h *load.Header) {
				h.Kind, h.Time, h.Chunk, h.Lo, h.Upper, h.Total = load.KindFailed, t0+5e6, 1, load.KeyOf("1200"), load.KeyOf("1207"), 3
			}),
			reason: "reading orders after key 1200: connection reset"},
	}
}

func encode(t *testing.T, enc *load.Encoder, h *load.Header, begin *load.Begin, tx *format.Tx, reason string) []byte {
	t.Helper()
	switch h.Kind {
	case load.KindBegin:
		b, err := load.EncodeBegin(begin)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case load.KindChunk:
		b, err := enc.Chunk(nil, h, tx)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case load.KindFailed:
		return load.EncodeReason(reason)
	}
	return nil
}

func newCodec(t testing.TB) (*load.Encoder, *load.Decoder) {
	c, err := wire.NewCompressor(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	d, err := load.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return load.NewEncoder(c), d
}

// TestGoldenVectors checks the code against testdata/messages.json: it
// encodes every message and compares headers (and exact bodies), then
// decodes every stored body and compares what it holds.
func TestGoldenVectors(t *testing.T) {
	enc, dec := newCodec(t)
	var got []vector
	for _, m := range messages() {
		h := m.h
		body := encode(t, enc, &h, m.begin, m.tx, m.reason)
		v := vector{Name: m.name, What: m.what, Subject: load.Subject(prefix, h.Table), Headers: h.Encode(),
			BodyHex: hex.EncodeToString(body), ExactBody: h.Kind != load.KindChunk || h.Codec == wire.CodecNone,
			Begin: m.begin, Reason: m.reason}
		if m.tx != nil {
			for _, c := range m.tx.Changes {
				v.Rows = append(v.Rows, row{Key: string(c.Key), After: string(c.After), Op: c.Op.String(), Version: c.Version})
			}
		}
		got = append(got, v)
	}
	path := filepath.Join("testdata", "messages.json")
	if *update {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGoldenVectors -update to create the vectors)", err)
	}
	var want []vector
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d vectors in %s, the code makes %d (run with -update for a deliberate change)", len(want), path, len(got))
	}
	for i, w := range want {
		t.Run(w.Name, func(t *testing.T) {
			g := got[i]
			if g.Subject != w.Subject || !reflect.DeepEqual(g.Headers, w.Headers) {
				t.Errorf("encoded headers:\n got %s %v\nwant %s %v", g.Subject, g.Headers, w.Subject, w.Headers)
			}
			if w.ExactBody && g.BodyHex != w.BodyHex {
				t.Errorf("encoded body:\n got %s\nwant %s", g.BodyHex, w.BodyHex)
			}
			// Decode the stored message.
			h, err := load.ParseHeader(w.Headers)
			if err != nil {
				t.Fatal(err)
			}
			if err := load.CheckSubject(prefix, w.Subject, &h); err != nil {
				t.Fatal(err)
			}
			body, err := hex.DecodeString(w.BodyHex)
			if err != nil {
				t.Fatal(err)
			}
			switch h.Kind {
			case load.KindBegin:
				b, err := load.DecodeBegin(&h, body)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(&b, w.Begin) {
					t.Errorf("begin %+v, want %+v", b, w.Begin)
				}
			case load.KindChunk:
				var tx format.Tx
				if err := dec.Chunk(&h, body, &tx); err != nil {
					t.Fatal(err)
				}
				var rows []row
				for _, c := range tx.Changes {
					rows = append(rows, row{Key: string(c.Key), After: string(c.After), Op: c.Op.String(), Version: c.Version})
				}
				if !reflect.DeepEqual(rows, w.Rows) {
					t.Errorf("rows %+v, want %+v", rows, w.Rows)
				}
			case load.KindFailed:
				r, err := load.DecodeReason(&h, body)
				if err != nil || r != w.Reason {
					t.Errorf("reason %q (%v), want %q", r, err, w.Reason)
				}
			}
		})
	}
}

func TestSubject(t *testing.T) {
	for _, c := range []struct{ table, want string }{
		{"orders", "ferry.load.orders"},
		{"dbo.Orders", "ferry.load.dbo%2EOrders"},
		{"a b*>%", "ferry.load.a%20b%2A%3E%25"},
		{"order_lines-2", "ferry.load.order_lines-2"},
	} {
		if got := load.Subject("ferry", c.table); got != c.want {
			t.Errorf("Subject(%q) = %q, want %q", c.table, got, c.want)
		}
		if !load.IsSubject("ferry", load.Subject("ferry", c.table)) {
			t.Errorf("IsSubject(%q) false", c.want)
		}
	}
	if load.IsSubject("ferry", "ferry.shop") || load.IsSubject("ferry", "ferry.loadx.a") {
		t.Error("IsSubject took a source subject")
	}
}

func TestReservedSource(t *testing.T) {
	err := format.CheckSource("load")
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("CheckSource(load) = %v, want reserved", err)
	}
	if format.ValidSource("load") || !format.ValidSource("loader") {
		t.Fatal("ValidSource: load must be refused, loader accepted")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []load.Key{load.KeyOf("1"), load.KeyOf("a/b", ""), {[]byte{0, 0xff, '\n'}}} {
		got, err := load.ParseKey(string(load.AppendKey(nil, k)))
		if err != nil || !reflect.DeepEqual(got, k) {
			t.Errorf("ParseKey(AppendKey(%q)) = %q, %v", k, got, err)
		}
	}
	for _, bad := range []string{"", "!!", "Ag", "gAE", "gAA"} {
		if k, err := load.ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) = %q, want an error", bad, k)
		}
	}
}

func TestBadMessages(t *testing.T) {
	enc, dec := newCodec(t)
	ms := messages()
	chunk := ms[1]
	h := chunk.h
	body := encode(t, enc, &h, nil, chunk.tx, "")
	hdr := h.Encode()
	edit := func(f func(m map[string][]string)) map[string][]string {
		m := map[string][]string{}
		for k, v := range hdr {
			m[k] = v
		}
		f(m)
		return m
	}
	headerCases := []struct {
		name string
		h    map[string][]string
	}{
		{"NoVersion", edit(func(m map[string][]string) { delete(m, load.HdrVersion) })},
		{"OtherVersion", edit(func(m map[string][]string) { m[load.HdrVersion] = []string{"2"} })},
		{"BadKind", edit(func(m map[string][]string) { m[load.HdrKind] = []string{"rows"} })},
		{"BadID", edit(func(m map[string][]string) { m[load.HdrLoad] = []string{"-x"}; delete(m, load.HdrMsgID) })},
		{"MsgIDMismatch", edit(func(m map[string][]string) { m[load.HdrMsgID] = []string{loadID + "/0/1"} })},
		{"NoLowSeq", edit(func(m map[string][]string) { delete(m, load.HdrLowSeq) })},
		{"ZeroRows", edit(func(m map[string][]string) { m[load.HdrRows] = []string{"0"} })},
		{"RawLenOverLimit", edit(func(m map[string][]string) { m[load.HdrRawLen] = []string{"67108865"} })},
		{"LastWithoutHi", edit(func(m map[string][]string) { m[load.HdrLastPart] = []string{"1"} })},
		{"HiNotLast", edit(func(m map[string][]string) { m[load.HdrChunkHi] = []string{"AQE"} })},
		{"BadLo", edit(func(m map[string][]string) { m[load.HdrChunkLo] = []string{"*"} })},
		{"NoTable", edit(func(m map[string][]string) { delete(m, load.HdrTable) })},
	}
	for _, c := range headerCases {
		t.Run(c.name, func(t *testing.T) {
			if got, err := load.ParseHeader(c.h); !errors.Is(err, load.ErrHeader) {
				t.Fatalf("ParseHeader = %+v, %v; want ErrHeader", got, err)
			}
		})
	}
	bodyCases := []struct {
		name string
		f    func(h *load.Header, b []byte) []byte
	}{
		{"Truncated", func(h *load.Header, b []byte) []byte { h.RawLen--; return b[:len(b)-1] }},
		{"FlippedBit", func(h *load.Header, b []byte) []byte { b = bytes.Clone(b); b[len(b)-3] ^= 1; return b }},
		{"TrailingBytes", func(h *load.Header, b []byte) []byte { h.RawLen++; return append(bytes.Clone(b), 0) }},
		{"RowCount", func(h *load.Header, b []byte) []byte { h.Rows = 3; return b }},
		{"OtherTable", func(h *load.Header, b []byte) []byte { h.Table = "customers"; return b }},
		{"OtherLoad", func(h *load.Header, b []byte) []byte { h.Load = "other"; return b }},
		{"NotAFrame", func(h *load.Header, b []byte) []byte { h.RawLen = 3; return []byte{1, 2, 3} }},
		{"Seal", func(h *load.Header, b []byte) []byte {
			f := format.AppendSeal(nil, format.Seal{Next: 2})
			h.RawLen = len(f)
			return f
		}},
		{"Delete", func(h *load.Header, b []byte) []byte {
			f, err := format.AppendTx(nil, &format.Tx{ID: loadID, Changes: []format.Change{{Table: "orders", Op: format.OpDelete, Key: []byte("1")}}})
			if err != nil {
				t.Fatal(err)
			}
			h.RawLen, h.Rows = len(f), 1
			return f
		}},
	}
	for _, c := range bodyCases {
		t.Run(c.name, func(t *testing.T) {
			hh := h
			b := c.f(&hh, body)
			var tx format.Tx
			if err := dec.Chunk(&hh, b, &tx); !errors.Is(err, load.ErrBody) {
				t.Fatalf("Chunk = %v, want ErrBody", err)
			} else if !strings.Contains(err.Error(), hh.MsgID()) {
				t.Fatalf("error %q does not name the message %s", err, hh.MsgID())
			}
		})
	}
	// The encoder refuses what the decoder would.
	bad := *chunk.tx
	bad.Changes = append([]format.Change(nil), bad.Changes...)
	bad.Changes[1].Op = format.OpDelete
	hh := chunk.h
	if _, err := enc.Chunk(nil, &hh, &bad); !errors.Is(err, load.ErrInvalid) {
		t.Fatalf("Encoder.Chunk took a delete: %v", err)
	}
}

// encodeHeaders renders headers as "key: value" lines, the form the fuzzer
// mutates.
func encodeHeaders(h map[string][]string) []byte {
	var keys []string
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range h[k] {
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return []byte(b.String())
}

func decodeHeaders(b []byte) map[string][]string {
	h := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok {
			h[k] = append(h[k], v)
		}
	}
	return h
}

// FuzzDecode feeds headers and bodies to the decoder: it must never panic,
// never inflate past its limit, and what it accepts must encode back to
// the same message.
func FuzzDecode(f *testing.F) {
	enc, _ := newCodec(f)
	for _, m := range messages() {
		h := m.h
		body := encode(&testing.T{}, enc, &h, m.begin, m.tx, m.reason)
		f.Add(encodeHeaders(h.Encode()), body)
	}
	dec, err := load.NewDecoder()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, hdr, body []byte) {
		h, err := load.ParseHeader(decodeHeaders(hdr))
		if err != nil {
			return
		}
		again, err := load.ParseHeader(h.Encode())
		if err != nil || !reflect.DeepEqual(again, h) {
			t.Fatalf("header round trip: %+v -> %+v, %v", h, again, err)
		}
		switch h.Kind {
		case load.KindBegin:
			if b, err := load.DecodeBegin(&h, body); err == nil {
				if _, err := load.EncodeBegin(&b); err != nil {
					t.Fatalf("decoded begin %+v does not encode: %v", b, err)
				}
			}
		case load.KindChunk:
			var tx format.Tx
			if err := dec.Chunk(&h, body, &tx); err != nil {
				return
			}
			if int64(len(tx.Changes)) != h.Rows {
				t.Fatalf("%d rows, header %d", len(tx.Changes), h.Rows)
			}
			h2 := h
			h2.Codec = wire.CodecNone
			raw, err := enc.Chunk(nil, &h2, &tx)
			if err != nil || h2.RawLen != h.RawLen {
				t.Fatalf("decoded rows do not encode back (%d bytes, header %d): %v", h2.RawLen, h.RawLen, err)
			}
			_ = raw
		case load.KindFailed:
			load.DecodeReason(&h, body)
		}
	})
}
