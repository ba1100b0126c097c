package main

import (
	"context"
	"errors"
)

// runDemo is being built; see the open issues.
func runDemo(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry demo: not available in this build yet")
}
