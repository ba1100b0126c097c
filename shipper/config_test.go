package shipper_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/shipper"
	"gopkg.in/yaml.v3"
)

func TestParseSources(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []shipper.SourceConfig
		err        string
	}{
		{"Two", "sources:\n  - {name: orders, dir: /a}\n  - {name: billing, dir: /b}\n",
			[]shipper.SourceConfig{{Name: "orders", Dir: "/a"}, {Name: "billing", Dir: "/b"}}, ""},
		{"None", "nats: x\n", nil, ""},
		{"NotAList", "sources: orders\n", nil, "must be a list"},
		{"BadName", "sources:\n  - {name: 'a.b', dir: /a}\n", nil, "sources[0].name"},
		{"NoDir", "sources:\n  - {name: a}\n", nil, "dir is missing"},
		{"Duplicate", "sources:\n  - {name: a, dir: /a}\n  - {name: a, dir: /b}\n", nil, "both named"},
		{"UnknownKey", "sources:\n  - {name: a, dir: /a, codec: s2}\n", nil, "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var file map[string]any
			if err := yaml.Unmarshal([]byte(tc.yaml), &file); err != nil {
				t.Fatal(err)
			}
			got, err := shipper.ParseSources(file["sources"])
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseSources = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseSources = %+v, want %+v", got, tc.want)
			}
		})
	}
}
