//go:build !lean

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrysync/ferry/receiver/wiretest"
)

// TestLoadCommand runs `ferry load mark` and `ferry load --jsonl` as a user
// scripts them, against a JetStream server.
func TestLoadCommand(t *testing.T) {
	s := wiretest.StartServer(t)
	dump := filepath.Join(t.TempDir(), "customers.jsonl")
	var b strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"c%d"}`+"\n", i, i)
	}
	if err := os.WriteFile(dump, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	mark, errOut, code := runFerry(t, nil, "load", "mark", "--nats", s.URL)
	if code != 0 || strings.TrimSpace(mark) != "0" || !strings.Contains(errOut, "take the dump now") {
		t.Fatalf("load mark: %q %q exit %d", mark, errOut, code)
	}
	args := []string{"load", "--nats", s.URL, "--jsonl", dump, "--table", "customers", "--key", "id", "--mark", strings.TrimSpace(mark),
		"--chunk-rows", "7", "--progress", "lines"}
	out, errOut, code := runFerry(t, nil, args...)
	if code != 0 || !strings.Contains(out, "customers: loaded by load customers-") || !strings.Contains(out, "30 rows sent") {
		t.Fatalf("load: %q %q exit %d", out, errOut, code)
	}
	if !strings.Contains(errOut, "load done table=customers") {
		t.Errorf("no final progress line: %q", errOut)
	}
	// The same command again: nothing to do.
	out, _, code = runFerry(t, nil, args...)
	if code != 0 || !strings.Contains(out, "already loaded") {
		t.Fatalf("rerun: %q exit %d", out, code)
	}
	// Usage errors: exit 2 with what to do.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"load", "--nats", s.URL, "--jsonl", dump, "--table", "customers", "--mark", "0"}, "--key"},
		{[]string{"load", "--nats", s.URL, "--jsonl", dump, "--table", "customers", "--key", "id"}, "ferry load mark"},
		{[]string{"load", "--nats", s.URL, "--jsonl", dump, "--table", "a,b", "--key", "id", "--mark", "0"}, "--key TABLE="},
		{[]string{"load", "--nats", s.URL, "--table", "a"}, "exactly one of --pg, --jsonl and --csv"},
	} {
		_, errOut, code := runFerry(t, nil, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d %q, want 2 naming %q", c.args, code, errOut, c.want)
		}
	}
}
