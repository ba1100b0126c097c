//go:build !lean

package main

import (
	"strings"
	"testing"
)

func TestDemoCommand(t *testing.T) {
	out, err := runCmd(t, "demo", "--duration", "1s", "--rate", "3000", "--plain", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("ferry demo: %v\n%s", err, out)
	}
	for _, want := range []string{"curl -s", "ferry load --nats nats://127.0.0.1:", "--mark ", "The receiver turned ready", "Summary",
		"OK: the receiver holds exactly the legacy's rows, loaded and written"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := runCmd(t, "demo", "--tx-size", "0"); err == nil || !strings.Contains(err.Error(), "tx-size") {
		t.Errorf("ferry demo --tx-size 0 = %v, want an error naming --tx-size", err)
	}
}
