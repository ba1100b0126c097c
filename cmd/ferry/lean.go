//go:build lean

package main

import (
	"context"
	"errors"
)

// A binary built with -tags lean (make build-lean) leaves out the demo and
// the bench, and with them the embedded NATS server, pgx and the workload:
// the legacy host's agent is then ~19 MB smaller and ~12 MB lighter in RSS
// (README.md, "One binary or a lean one").
var errLean = errors.New("this ferry was built with -tags lean, without demo and bench; use a full build (make build)")

func runDemo(context.Context, *Env, []string) error  { return &exitError{code: 2, err: errLean} }
func runBench(context.Context, *Env, []string) error { return &exitError{code: 2, err: errLean} }

// runLoad: the initial load links pgx, which the lean build leaves out.
func runLoad(context.Context, *Env, []string) error {
	return &exitError{code: 2, err: errors.New("this ferry was built with -tags lean, without the initial load (it links the PostgreSQL driver); run ferry load from a full build (make build)")}
}
