package store

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// Command records in the plain form decode as json.Unmarshal decodes them
// and encode byte for byte as json.Marshal does: records written by every
// release read the same, and records written now read the same in them.
func FuzzCommandRecords(f *testing.F) {
	for _, s := range []string{
		`{"source":"shop","table":"orders","key":"o 1","op":"insert","digest":"ab12","time":"2026-12-04T03:04:05.123456789Z"}`,
		`{"state":"applied","origin":"svc","source":"shop","segment":3,"offset":-45,"change_id":7,"version":2,"time":1700000000000000000} `,
		`{"state":"rejected","source":"shop","segment":3,"offset":9223372036854775807,"reason":"no <row>","time":-9223372036854775808}`,
		`{"state":"applied","offset":9223372036854775808}`,
		`{"state":"applied","extra":[1]}`,
		`{"state":"applied"} x`,
		`{"state":"applied","state":"rejected"}`,
		`{"time":"2026-12-04 03:04:05Z"}`,
		`{"time":null,"key":"k"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seed := Submitted{Key: "before"} // fields a record lacks stay as they were
		var ws, gs = seed, seed
		werr := json.Unmarshal(b, &ws)
		if gs.decodePlain(b) {
			g, w := gs, ws
			g.Time, w.Time = time.Time{}, time.Time{}
			if werr != nil || g != w || !gs.Time.Equal(ws.Time) || gs.Time.String() != ws.Time.String() {
				t.Fatalf("%q: plain %+v, json.Unmarshal %+v (%v)", b, gs, ws, werr)
			}
		}
		if werr == nil {
			checkPlainRecord(t, &ws, ws.appendPlain)
		}
		var wo, gout = Outcome{Reason: "before"}, Outcome{Reason: "before"}
		werr = json.Unmarshal(b, &wo)
		if gout.decodePlain(b) && (werr != nil || gout != wo) {
			t.Fatalf("%q: plain %+v, json.Unmarshal %+v (%v)", b, gout, wo, werr)
		}
		if werr == nil {
			checkPlainRecord(t, &wo, wo.appendPlain)
		}
	})
}

func checkPlainRecord(t *testing.T, v any, appendPlain func([]byte) ([]byte, bool)) {
	t.Helper()
	got, ok := appendPlain(nil)
	if !ok {
		return
	}
	want, err := json.Marshal(v)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("plain encoding %q, json.Marshal %q (%v)", got, want, err)
	}
}

// Records are written in the plain form when they can be, and read back
// whole either way.
func TestCommandRecordsPlain(t *testing.T) {
	sub := Submitted{Source: "shop", Table: "orders", Key: "o-1", Op: "insert", Digest: "ab", Time: time.Now().UTC()}
	out := Outcome{State: CommandRejected, Origin: "svc", Source: "shop", Segment: 2, Offset: 45, Reason: "stale version", Time: 9}
	for _, tc := range []struct {
		v     any
		plain bool
	}{
		{&sub, true},
		{&out, true},
		{&Submitted{Key: "clé", Time: sub.Time}, false},
		{&Outcome{State: CommandRejected, Reason: `a "quoted" <reason>`}, false},
	} {
		b, err := encodeRecord(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(tc.v)
		if !bytes.Equal(b[1:], want) {
			t.Fatalf("encodeRecord(%+v) = %q, want %q", tc.v, b[1:], want)
		}
		var plain bool
		switch r := tc.v.(type) {
		case *Submitted:
			_, plain = r.appendPlain(nil)
		case *Outcome:
			_, plain = r.appendPlain(nil)
		}
		if plain != tc.plain {
			t.Fatalf("%+v: plain encoding %v, want %v", tc.v, plain, tc.plain)
		}
		got := reflect.New(reflect.TypeOf(tc.v).Elem())
		if err := decodeRecord(b, got.Interface()); err != nil {
			t.Fatal(err)
		}
		if s, ok := got.Interface().(*Submitted); ok {
			if w := tc.v.(*Submitted); !s.Time.Equal(w.Time) || s.Key != w.Key || s.Digest != w.Digest {
				t.Fatalf("decoded %+v, want %+v", s, w)
			}
		} else if !reflect.DeepEqual(got.Interface(), tc.v) {
			t.Fatalf("decoded %+v, want %+v", got.Interface(), tc.v)
		}
	}
}
