package load

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is what the loader needs of the change stream. *JetStream
// implements it.
type Stream interface {
	// Info returns the stream's configuration and state, from its leader
	// (never a cached copy: the low watermark is read from it).
	Info(ctx context.Context) (*jetstream.StreamInfo, error)
	// LastMsg returns the last message stored on subject, nil if none.
	LastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
	// PrevMsg returns the last message stored on subject before sequence
	// before, nil if none.
	PrevMsg(ctx context.Context, subject string, before uint64) (*jetstream.RawStreamMsg, error)
	// PublishAsync publishes msg without waiting for its ack.
	PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error)
	// Publish publishes msg and waits for its ack.
	Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error)
	// MaxPayload is the largest message the server accepts.
	MaxPayload() int
	// Epoch changes whenever the connection was lost and re-established:
	// a server that restarted may have lost acknowledged messages.
	Epoch() uint64
}

// JetStream is the change stream on a NATS connection. Every request has a
// deadline of its own (requestTimeout; publishes the ack timeout), whatever
// the caller's context: a reply lost while the server restarted must not
// leave the loader waiting forever.
type JetStream struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	st         jetstream.Stream
	ackTimeout time.Duration
}

// requestTimeout bounds one stream request (info, last message).
const requestTimeout = 10 * time.Second

var _ Stream = (*JetStream)(nil)

// OpenJetStream opens (creating it if it does not exist, as shippers do)
// the change stream cfg names over nc. Publishes time out after ackTimeout
// (0: 30 s).
func OpenJetStream(ctx context.Context, nc *nats.Conn, cfg jsclient.Config, ackTimeout time.Duration) (*JetStream, error) {
	if ackTimeout <= 0 {
		ackTimeout = 30 * time.Second
	}
	if err := jsclient.CheckConn(nc); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256), jetstream.WithPublishAsyncTimeout(ackTimeout))
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	st, err := jsclient.EnsureStream(ctx, js, cfg)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return &JetStream{nc: nc, js: js, st: st, ackTimeout: ackTimeout}, nil
}

// Info implements Stream.
func (s *JetStream) Info(ctx context.Context) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	info, err := s.st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("load: reading stream info: %w", err)
	}
	return info, nil
}

// LastMsg implements Stream.
func (s *JetStream) LastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	m, err := s.st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load: reading the last message of %s: %w", subject, err)
	}
	return m, nil
}

// PrevMsg implements Stream.
func (s *JetStream) PrevMsg(ctx context.Context, subject string, before uint64) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	m, err := jsclient.PrevMsg(ctx, s.st, subject, before)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return m, nil
}

// PublishAsync implements Stream.
func (s *JetStream) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	f, err := s.js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("load: publishing to %s: %w", msg.Subject, err)
	}
	return f, nil
}

// Publish implements Stream.
func (s *JetStream) Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, s.ackTimeout)
	defer cancel()
	a, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("load: publishing to %s: %w", msg.Subject, err)
	}
	return a, nil
}

// MaxPayload implements Stream.
func (s *JetStream) MaxPayload() int { return int(s.nc.MaxPayload()) }

// Epoch implements Stream.
func (s *JetStream) Epoch() uint64 { return s.nc.Stats().Reconnects }

// Mark is the stream position a dump is taken after (`ferry load mark`).
type Mark struct {
	Seq  uint64    // the stream's last sequence
	Time time.Time // when it was read
}

// ReadMark reads the stream's last sequence from its leader: take a dump
// after it, and load the dump with it (Config.Mark).
func ReadMark(ctx context.Context, st Stream) (Mark, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return Mark{}, err
	}
	return Mark{Seq: info.State.LastSeq, Time: time.Now().UTC()}, nil
}
