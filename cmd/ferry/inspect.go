package main

import (
	"context"
	"errors"
)

// runInspect is being built; see the open issues.
func runInspect(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry inspect: not available in this build yet")
}
