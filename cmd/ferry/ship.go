package main

import (
	"context"
	"errors"
)

// runShip is being built; see the open issues.
func runShip(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry ship: not available in this build yet")
}
