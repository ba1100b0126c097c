package main

import (
	"context"
	"errors"
)

// runBench is being built; see the open issues.
func runBench(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry bench: not available in this build yet")
}
