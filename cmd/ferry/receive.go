package main

import (
	"context"
	"errors"
)

// runReceive is being built; see the open issues.
func runReceive(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry receive: not available in this build yet")
}
