package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

var plainSeeds = []string{
	`{"id":"c1","origin":"svc","source":"shop","table":"orders","key":"o-1","op":"update","after":{"qty":1,"sku":"A 1"},"version":3,"submitted":"2026-12-04T03:04:05.123456789Z","seq":9}`,
	`{"id":"c1","origin":"svc","source":"shop","table":"orders","key":"o-1","op":"insert","after":{"qty":1},"submitted":"2026-12-04T03:04:05+02:00"}` + "\n",
	` { "id" : "c1" , "op":"delete" , "version" : 18446744073709551615 } trailing`,
	`{"id":"c1","version":18446744073709551616}`,
	`{"id":"c1","version":1e3}`,
	`{"id":"c1","version":01}`,
	`{"id":"c1","version":-1}`,
	`{"id":"c1","version":1.0}`,
	`{"id":"c1","version":null}`,
	`{"id":"c1","ID":"c2"}`,
	`{"id":"c1","id":"c2"}`,
	`{"Id":"c1"}`,
	`{"id":"c\u00e9"}`,
	`{"id":"cé","key":"\xff"}`,
	`{"id":"c1","extra":1}`,
	`{"id":"c1","after":null}`,
	`{"id":"c1","after":"x"}`,
	`{"id":"c1","after":[1, {"a":"]}\"}"}]}`,
	`{"id":"c1","after":{"a":<>}}`,
	`{"id":"c1","after":{"a":"<&>"}}`,
	`{"id":"c1","after":{"a":1},}`,
	`{"id":"c1","submitted":"2026-13-04T03:04:05Z"}`,
	`{"id":"c1","submitted":"2026-12-04 03:04:05Z"}`,
	`{"id":"c1","submitted":null}`,
	`{"id":"c1","submitted":12}`,
	`{"id":"c1"`,
	`{"id":"c1" "op":"x"}`,
	`{}`,
	`[]`,
	``,
	`{"id":"a	b"}`,
}

// The plain form decodes as encoding/json does (json.Decoder with
// DisallowUnknownFields), and encodes byte for byte as json.Marshal does:
// whatever it takes, it is a shortcut, never a second dialect.
func FuzzPlainCodec(f *testing.F) {
	for _, s := range plainSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want Command
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		werr := d.Decode(&want)
		if got, ok := decodePlain(b); ok {
			if werr != nil {
				t.Fatalf("plain decoding took %q, encoding/json refuses it: %v", b, werr)
			}
			if !sameCommand(got, want) {
				t.Fatalf("%q: plain decoding %+v, encoding/json %+v", b, got, want)
			}
		}
		if werr != nil {
			return
		}
		checkPlainEncoding(t, &want)
	})
}

func checkPlainEncoding(t *testing.T, c *Command) {
	t.Helper()
	want, werr := json.Marshal(c)
	got, ok := appendPlain(nil, c)
	if !ok {
		return
	}
	if werr != nil {
		t.Fatalf("plain encoding wrote %q, json.Marshal fails: %v", got, werr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("plain encoding %q, json.Marshal %q", got, want)
	}
}

func sameCommand(a, b Command) bool {
	return a.ID == b.ID && a.Origin == b.Origin && a.Source == b.Source && a.Table == b.Table && a.Key == b.Key &&
		a.Op == b.Op && bytes.Equal(a.After, b.After) && (a.After == nil) == (b.After == nil) && a.Version == b.Version &&
		a.Seq == b.Seq && a.Submitted.Equal(b.Submitted) && a.Submitted.String() == b.Submitted.String()
}

// Commands outside the plain form are encoded by json.Marshal; those in it
// take the short way. Both give json.Marshal's bytes.
func TestPlainEncoding(t *testing.T) {
	base := Command{ID: "c1", Origin: "svc", Source: "shop", Table: "orders", Key: "o-1", Op: OpUpdate,
		After: json.RawMessage(`{"qty":1}`), Version: 3, Submitted: time.Date(2026, 12, 4, 3, 4, 5, 6, time.UTC), Seq: 9}
	for _, tc := range []struct {
		name  string
		edit  func(*Command)
		plain bool
	}{
		{"Plain", func(*Command) {}, true},
		{"NoAfterVersionSeq", func(c *Command) { c.Op, c.After, c.Seq = OpDelete, nil, 0 }, true},
		{"ZoneOffset", func(c *Command) { c.Submitted = c.Submitted.In(time.FixedZone("x", 3600)) }, true},
		{"UnicodeKey", func(c *Command) { c.Key = "clé" }, false},
		{"HTMLKey", func(c *Command) { c.Key = "a<b>&c" }, false},
		{"QuoteKey", func(c *Command) { c.Key = `a"b\c` }, false},
		{"SpacedAfter", func(c *Command) { c.After = json.RawMessage("{ \"qty\" : 1 }") }, false},
		{"HTMLAfter", func(c *Command) { c.After = json.RawMessage(`{"s":"<b>"}`) }, false},
		{"InvalidAfter", func(c *Command) { c.After = json.RawMessage(`{"s":`) }, false},
		{"YearOutOfRange", func(c *Command) { c.Submitted = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			if _, ok := appendPlain(nil, &c); ok != tc.plain {
				t.Fatalf("plain form: %v, want %v", ok, tc.plain)
			}
			checkPlainEncoding(t, &c)
			got, gerr := Marshal(&c)
			want, werr := json.Marshal(&c)
			if (gerr != nil) != (werr != nil) || (werr == nil && !bytes.Equal(got, append(want, '\n'))) {
				t.Fatalf("Marshal = %q, %v; json.Marshal %q, %v", got, gerr, want, werr)
			}
			if app, err := Append([]byte("prefix"), &c); (err != nil) != (gerr != nil) || (err == nil && string(app) != "prefix"+string(got)) {
				t.Fatalf("Append = %q, %v; Marshal %q, %v", app, err, got, gerr)
			}
		})
	}
}

// What Marshal writes is read back the short way.
func TestPlainDecoding(t *testing.T) {
	for _, s := range plainSeeds[:3] {
		if _, ok := decodePlain([]byte(s)); !ok {
			t.Errorf("%q: not decoded in the plain form", s)
		}
	}
	c := Command{ID: "c1", Origin: "svc", Source: "shop", Table: "orders", Key: "o-1", Op: OpInsert,
		After: json.RawMessage(`{"qty":1}`), Submitted: time.Now().UTC(), Seq: 9}
	b, err := Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := decodePlain(b)
	if !ok || !sameCommand(got, c) {
		t.Fatalf("decodePlain(%q) = %+v, %v", b, got, ok)
	}
	// Validated whole, the after image too, though the plain decoding
	// spares Unmarshal checking it twice.
	bad := []byte(`{"id":"c1","origin":"svc","source":"shop","table":"t","key":"k","op":"insert","after":{"a":},"submitted":"2026-12-04T03:04:05Z"}`)
	if _, err := Unmarshal(bad, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Unmarshal(%q) = %v, want ErrInvalid", bad, err)
	}
}
