package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeanBuild: a binary built with -tags lean (the legacy host's agent)
// links neither the embedded NATS server nor pgx nor the bench, and keeps
// every agent command.
func TestLeanBuild(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "lean", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := string(out)
	for _, banned := range []string{"github.com/nats-io/nats-server/v2/server", "github.com/jackc/pgx/v5", "github.com/ferrysync/ferry/bench"} {
		for _, line := range strings.Split(deps, "\n") {
			if line == banned {
				t.Errorf("the lean build links %s", banned)
			}
		}
	}
	for _, want := range []string{"github.com/ferrysync/ferry/shipper", "github.com/ferrysync/ferry/receiver", "github.com/ferrysync/ferry/format/wire/natsconn"} {
		if !strings.Contains(deps, want+"\n") {
			t.Errorf("the lean build lacks %s", want)
		}
	}
}
