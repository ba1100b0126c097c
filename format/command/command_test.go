package command_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format/command"
)

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"3f2b6c1e-8d4a-4b7e-9c1f-2a6d8e0b4c3d", true},
		{"svc-a:000123", true},
		{"01HV5Z.x_y", true},
		{"", false},
		{".", false},
		{"..", false},
		{"-a", false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{strings.Repeat("a", command.MaxIDLen), true},
		{strings.Repeat("a", command.MaxIDLen+1), false},
	} {
		if got := command.ValidID(tc.id); got != tc.ok {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	base := command.Command{ID: "c1", Origin: "svc", Source: "shop", Table: "orders", Key: "o-1", Op: command.OpUpdate,
		After: json.RawMessage(`{"qty":1}`), Version: 3, Submitted: time.Unix(1, 0)}
	for _, tc := range []struct {
		name  string
		edit  func(*command.Command)
		field string // in the error; "" = valid
	}{
		{"Valid", func(*command.Command) {}, ""},
		{"BadID", func(c *command.Command) { c.ID = "a/b" }, "id"},
		{"NoOrigin", func(c *command.Command) { c.Origin = "" }, "origin"},
		{"BadSource", func(c *command.Command) { c.Source = "a.b" }, "source"},
		{"NoTable", func(c *command.Command) { c.Table = "" }, "table"},
		{"NoKey", func(c *command.Command) { c.Key = "" }, "key"},
		{"BadOp", func(c *command.Command) { c.Op = "merge" }, "op"},
		{"UpdateNoVersion", func(c *command.Command) { c.Version = 0 }, "version"},
		{"InsertWithVersion", func(c *command.Command) { c.Op = command.OpInsert }, "version"},
		{"NoImage", func(c *command.Command) { c.After = nil }, "after image"},
		{"NotJSON", func(c *command.Command) { c.After = json.RawMessage(`{x`) }, "JSON"},
		{"TooLarge", func(c *command.Command) { c.After = json.RawMessage(`"` + strings.Repeat("a", 100) + `"`) }, "bytes"},
		{"DeleteWithImage", func(c *command.Command) { c.Op = command.OpDelete }, "delete"},
		{"Delete", func(c *command.Command) { c.Op, c.After = command.OpDelete, nil }, ""},
		{"UpsertNoVersion", func(c *command.Command) { c.Op, c.Version = command.OpUpsert, 0 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.Validate(64)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, command.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate = %v, want ErrInvalid naming %q", err, tc.field)
			}
		})
	}
}

// A command survives Marshal/Unmarshal whole, as one line; unknown fields
// are refused.
func TestRoundTrip(t *testing.T) {
	c := command.Command{ID: "c1", Origin: "svc", Source: "shop", Table: "orders", Key: "o-1", Op: command.OpUpdate,
		After: json.RawMessage(`{"qty":1}`), Version: 3, Submitted: time.Unix(1, 5).UTC(), Seq: 9}
	b, err := command.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), "\n") != 1 || b[len(b)-1] != '\n' {
		t.Fatalf("Marshal = %q, want one line", b)
	}
	got, err := command.Unmarshal(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.After) != string(c.After) || got.ID != c.ID || got.Version != c.Version || !got.Submitted.Equal(c.Submitted) || got.Seq != 9 {
		t.Fatalf("round trip: %+v, want %+v", got, c)
	}
	if _, err := command.Unmarshal([]byte(`{"id":"c1","extra":1}`), 0); !errors.Is(err, command.ErrInvalid) {
		t.Fatalf("unknown field: %v", err)
	}
}
