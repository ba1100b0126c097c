package receiver

import (
	"context"
	"fmt"
	"sync"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/nats-io/nats.go/jetstream"
)

// WithCommands enables write-back (POST /v1/commands, GET
// /v1/commands/{id}): origin names this receiver's service (the origin the
// legacy writes into the resulting transactions), tables maps each table the
// service may write to the legacy source that masters it.
func WithCommands(origin string, tables map[string]string) Option {
	return func(o *options) error {
		if !format.ValidSource(origin) {
			return fmt.Errorf("%w: origin %q: want 1-%d of [A-Za-z0-9_-] (the service's name)", ErrInvalidOption, origin, format.MaxSourceLen)
		}
		if len(tables) == 0 {
			return fmt.Errorf("%w: write-back needs at least one table=source (--command-table)", ErrInvalidOption)
		}
		for t, s := range tables {
			if t == "" || !format.ValidSource(s) {
				return fmt.Errorf("%w: command table %q=%q: want TABLE=SOURCE with a valid source name", ErrInvalidOption, t, s)
			}
		}
		o.origin, o.cmdTables = origin, tables
		return nil
	}
}

// WithCommandStream sets the commands stream and subject prefix (defaults
// FERRY_CMD and ferry_cmd; the agent must use the same).
func WithCommandStream(stream, prefix string) Option {
	return func(o *options) error {
		if stream == "" || prefix == "" {
			return fmt.Errorf("%w: empty commands stream or prefix", ErrInvalidOption)
		}
		o.cmdStream, o.cmdPrefix = stream, prefix
		return nil
	}
}

// WithMaxCommandImage bounds a command's after image (default 64 KiB).
func WithMaxCommandImage(n int) Option {
	return func(o *options) error {
		if n < 1 || n > command.MaxImage {
			return fmt.Errorf("%w: command image bound %d outside 1..%d", ErrInvalidOption, n, command.MaxImage)
		}
		o.cmdMaxImage = n
		return nil
	}
}

// WithExcludeOrigins leaves the changes of these origins out of the SSE
// feed and the webhook: a service does not receive its own write-backs back
// as news (no echo). Rows and GET /v1/changes still show them.
func WithExcludeOrigins(origins ...string) Option {
	return func(o *options) error {
		for _, s := range origins {
			if !format.ValidSource(s) {
				return fmt.Errorf("%w: origin %q: want 1-%d of [A-Za-z0-9_-]", ErrInvalidOption, s, format.MaxSourceLen)
			}
		}
		o.excludeOrigins = append(o.excludeOrigins, origins...)
		return nil
	}
}

// publisher publishes commands to the commands stream, creating it on first
// use.
type publisher struct {
	js             jetstream.JetStream
	stream, prefix string

	mu    sync.Mutex
	ready bool
}

func (p *publisher) PublishCommand(ctx context.Context, c *command.Command) error {
	p.mu.Lock()
	if !p.ready {
		if _, err := command.EnsureStream(ctx, p.js, p.stream, p.prefix); err != nil {
			p.mu.Unlock()
			return err
		}
		p.ready = true
	}
	p.mu.Unlock()
	body, err := command.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := p.js.Publish(ctx, command.Subject(p.prefix, c.Source), body, jetstream.WithMsgID(c.ID)); err != nil {
		return fmt.Errorf("publishing command %s: %w", c.ID, err)
	}
	return nil
}
