package main

import (
	"context"
	"errors"
)

// runStatus is being built; see the open issues.
func runStatus(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry status: not available in this build yet")
}
