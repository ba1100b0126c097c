package command

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DuplicateWindow is the commands stream's de-duplication window. Beyond
// it the receiver's record of submitted ids and the legacy's record of
// applied ids keep a command from being carried out twice.
const DuplicateWindow = 10 * time.Minute

// EnsureStream creates the commands stream (file storage, subjects
// <prefix>.>) or checks that the existing one holds those subjects. Both
// the receivers (which publish) and the agent (which consumes) call it, so
// either may start first.
func EnsureStream(ctx context.Context, js jetstream.JetStream, name, prefix string) (jetstream.Stream, error) {
	want := prefix + ".>"
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        name,
			Description: "Ferry write-back commands, one subject per legacy source",
			Subjects:    []string{want},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      7 * 24 * time.Hour,
			Duplicates:  DuplicateWindow,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, name) // created meanwhile by another process
		}
	}
	if err != nil {
		return nil, fmt.Errorf("command: commands stream %s: %w", name, err)
	}
	if sc := st.CachedInfo().Config; !slices.Contains(sc.Subjects, want) {
		return nil, fmt.Errorf("command: stream %s has subjects %v, not %s: name another stream or prefix for commands", name, sc.Subjects, want)
	}
	return st, nil
}
