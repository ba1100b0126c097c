package main

import (
	"context"
	"errors"
)

// runWrite is being built; see the open issues.
func runWrite(ctx context.Context, env *Env, args []string) error {
	return errors.New("ferry write: not available in this build yet")
}
