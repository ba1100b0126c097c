package flatjson_test

import (
	"testing"

	"github.com/ferrysync/ferry/format/flatjson"
)

// TestOnce: a key read twice takes the object out of the plain form, as
// encoding/json would keep the second value and the caller the first.
func TestOnce(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want bool
	}{
		{`{"a":"x","b":"y"}`, true},
		{`{"a":"x","a":"y"}`, false},
		{`{"a":"x","b":"y","a":"z"}`, false},
	} {
		o := flatjson.Open([]byte(c.doc))
		seen := 0
		for o.Next() {
			bit := 1
			if string(o.Key()) == "b" {
				bit = 2
			}
			o.Str()
			o.Once(&seen, bit)
		}
		if got := o.OK(); got != c.want {
			t.Errorf("%s: OK %v, want %v", c.doc, got, c.want)
		}
	}
}
