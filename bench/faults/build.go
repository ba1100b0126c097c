// Package faults runs Ferry for real and breaks it on purpose: it builds the
// ferry binary and a nats-server binary from the module, runs them as
// processes on loopback ports, drives a synthetic legacy writer, and injects
// faults (kill -9, leader loss, outages, torn tails, corruption, throttling).
// Its tests are the end-to-end fault suite; package check is their oracle.
package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the executables the suite runs.
type Binaries struct {
	Ferry      string
	NATSServer string
}

// Build compiles the ferry command and nats-server (from the module's pinned
// version) into dir. It runs `go build` from the module, so it needs the Go
// toolchain and the module cache only.
func Build(ctx context.Context, dir string) (Binaries, error) {
	b := Binaries{Ferry: filepath.Join(dir, "ferry"), NATSServer: filepath.Join(dir, "nats-server")}
	root, err := moduleRoot(ctx)
	if err != nil {
		return b, err
	}
	for _, job := range []struct{ out, pkg string }{
		{b.Ferry, "./cmd/ferry"},
		{b.NATSServer, "github.com/nats-io/nats-server/v2"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", job.out, job.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("faults: building %s: %w\n%s", job.pkg, err, out)
		}
	}
	return b, nil
}

// moduleRoot returns the directory of Ferry's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("faults: locating the module (go env GOMOD): %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("faults: not inside the ferry module (go env GOMOD is empty); run the suite from the repository")
	}
	return filepath.Dir(mod), nil
}
