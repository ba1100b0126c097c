package receiver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/nats-io/nats.go"
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

// publishWindow bounds the commands published and not yet acknowledged,
// all submissions together: a submission past it waits for room (at most
// its publish timeout), so a slow stream slows the services down instead
// of piling up commands in memory.
const publishWindow = 4096

// publisher publishes commands to the commands stream, creating it on first
// use. Every submission's commands go out at once, asynchronously, on one
// JetStream context shared by all submissions: concurrent submissions and
// the commands of a batch share the connection's round trips instead of
// waiting one acknowledgement each in turn (a synchronous publish costs a
// round trip and two goroutine switches per command). Each submission
// still waits for the acknowledgements of its own commands before it is
// answered: durability before 202.
type publisher struct {
	js             jetstream.JetStream // with the bounded asynchronous window
	stream, prefix string

	mu    sync.Mutex
	ready bool
}

func newPublisher(nc *nats.Conn, stream, prefix string) (*publisher, error) {
	// The timeout frees the window's room of an acknowledgement that never
	// comes (a server killed after it read the message); the submission
	// waiting for it gave up earlier, at its own timeout.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishWindow), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("receiver: JetStream context for commands: %w", err)
	}
	return &publisher{js: js, stream: stream, prefix: prefix}, nil
}

func (p *publisher) PublishCommands(ctx context.Context, cmds []*command.Command) []error {
	errs := make([]error, len(cmds))
	p.mu.Lock()
	if !p.ready {
		if _, err := command.EnsureStream(ctx, p.js, p.stream, p.prefix); err != nil {
			p.mu.Unlock()
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
		p.ready = true
	}
	p.mu.Unlock()
	stall := 200 * time.Millisecond
	if d, ok := ctx.Deadline(); ok {
		stall = max(time.Until(d), time.Millisecond)
	}
	futs := make([]jetstream.PubAckFuture, len(cmds))
	// The bodies share one buffer (each capped, so that none grows into
	// the next; a buffer outgrown stays with the bodies in it), held by
	// the messages until acknowledged.
	n := 0
	for _, c := range cmds {
		n += 256 + len(c.After)
	}
	buf := make([]byte, 0, n)
	for i, c := range cmds {
		start := len(buf)
		var err error
		if buf, err = command.Append(buf, c); err != nil {
			errs[i] = err
			continue
		}
		body := buf[start:len(buf):len(buf)]
		futs[i], err = p.js.PublishAsync(command.Subject(p.prefix, c.Source), body, jetstream.WithMsgID(c.ID), jetstream.WithStallWait(stall))
		if err != nil {
			errs[i] = fmt.Errorf("publishing command %s: %w", c.ID, err)
		}
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = fmt.Errorf("publishing command %s: %w", cmds[i].ID, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("publishing command %s: no acknowledgement from the stream: %w", cmds[i].ID, ctx.Err())
		}
	}
	return errs
}
