package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// broker is the embedded JetStream server of one mode: same settings for
// every mode (file storage in a temp dir, the server's default sync
// interval), reached over in-process connections.
type broker struct {
	dir string
	srv *server.Server
	// url, if set, is a server of another process (tests that kill it):
	// connect dials it instead of srv.
	url string
}

func startBroker() (*broker, error) { return newBroker(false) }

// startListeningBroker is a broker that also listens on a free loopback
// port (clientURL), for a process of its own (the load phase's loader).
func startListeningBroker() (*broker, error) { return newBroker(true) }

func newBroker(listen bool) (*broker, error) {
	dir, err := os.MkdirTemp("", "ferry-bench-js-")
	if err != nil {
		return nil, fmt.Errorf("bench: creating the JetStream store dir: %w", err)
	}
	opts := &server.Options{
		JetStream: true, StoreDir: dir, DontListen: !listen, NoLog: true, NoSigs: true,
		MaxPayload: 8 << 20,
	}
	if listen {
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: creating the embedded JetStream server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: embedded JetStream server not ready after 10 s")
	}
	return &broker{dir: dir, srv: srv}, nil
}

func (b *broker) connect(name string) (*nats.Conn, error) {
	if b.url != "" {
		nc, err := nats.Connect(b.url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1))
		if err != nil {
			return nil, fmt.Errorf("bench: connecting %s to %s: %w", name, b.url, err)
		}
		return nc, nil
	}
	nc, err := nats.Connect("", nats.InProcessServer(b.srv), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1))
	if err != nil {
		return nil, fmt.Errorf("bench: connecting %s to the embedded JetStream server: %w", name, err)
	}
	return nc, nil
}

// clientURL is the URL a process reaches a listening broker at.
func (b *broker) clientURL() string {
	if b.url != "" {
		return b.url
	}
	return b.srv.ClientURL()
}

func (b *broker) stop() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	os.RemoveAll(b.dir)
}

// wireStats is what crossed the wire into the stream, counted by reading
// the stream back after the run.
type wireStats struct {
	Messages int64
	// Bytes are message bodies plus headers as sent.
	Bytes int64
	// Raw is what the bodies hold uncompressed (Ferry-Raw-Len for Ferry
	// batches; the body itself for uncompressed messages).
	Raw int64
}

func headerLen(h nats.Header) int64 {
	if len(h) == 0 {
		return 0
	}
	n := int64(len("NATS/1.0\r\n") + 2)
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + 2 + len(v) + 2)
		}
	}
	return n
}

// countStream reads every message of stream back with an ordered consumer.
func countStream(ctx context.Context, nc *nats.Conn, stream string) (wireStats, error) {
	var ws wireStats
	js, err := jetstream.New(nc)
	if err != nil {
		return ws, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return ws, fmt.Errorf("bench: stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return ws, fmt.Errorf("bench: stream %s info: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return ws, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return ws, fmt.Errorf("bench: reading stream %s back: %w", stream, err)
	}
	done := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		ws.Messages++
		ws.Bytes += int64(len(m.Data())) + headerLen(m.Headers())
		if raw := m.Headers().Get("Ferry-Raw-Len"); raw != "" {
			n, _ := strconv.ParseInt(raw, 10, 64)
			ws.Raw += n
		} else {
			ws.Raw += int64(len(m.Data()))
		}
		mu.Unlock()
		if md, err := m.Metadata(); err == nil && md.Sequence.Stream >= last {
			once.Do(func() { close(done) })
		}
	}, jetstream.PullMaxMessages(2000))
	if err != nil {
		return ws, fmt.Errorf("bench: reading stream %s back: %w", stream, err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return ws, ctx.Err()
	case <-time.After(5 * time.Minute):
		return ws, fmt.Errorf("bench: reading stream %s back: not at sequence %d after 5 min", stream, last)
	}
	mu.Lock()
	defer mu.Unlock()
	return ws, nil
}
