package jsclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connect starts an embedded JetStream server and connects to it, with
// opts (nats.ReconnectBufSize(-1) if none, as publishers need).
func connect(t *testing.T, opts ...nats.Option) *nats.Conn {
	t.Helper()
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	t.Cleanup(s.Shutdown)
	if len(opts) == 0 {
		opts = []nats.Option{nats.ReconnectBufSize(-1)}
	}
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(s)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestEnsureStreamRefusesIncompatible(t *testing.T) {
	base := jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}, Storage: jetstream.FileStorage}
	cases := []struct {
		name   string
		mutate func(*jetstream.StreamConfig)
		ok     bool
	}{
		{"Compatible", func(*jetstream.StreamConfig) {}, true},
		{"MoreSubjects", func(c *jetstream.StreamConfig) { c.Subjects = []string{"other.>", "ferry.>"} }, true},
		{"Memory", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, false},
		{"WorkQueue", func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }, false},
		{"OtherSubjects", func(c *jetstream.StreamConfig) { c.Subjects = []string{"ferry.orders"} }, false},
		{"LastPerSubject", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := connect(t)
			js, _ := jetstream.New(nc)
			cfg := base
			tc.mutate(&cfg)
			if _, err := js.CreateStream(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			_, err := jsclient.EnsureStream(context.Background(), js, jsclient.Config{})
			if tc.ok && err != nil {
				t.Fatalf("EnsureStream = %v, want it accepted", err)
			}
			if !tc.ok && !errors.Is(err, jsclient.ErrIncompatible) {
				t.Fatalf("EnsureStream = %v, want ErrIncompatible", err)
			}
		})
	}
}

func TestCreatesStreamAndFences(t *testing.T) {
	nc := connect(t)
	ctx := context.Background()
	c, err := jsclient.New(ctx, nc, jsclient.Config{Replicas: 1, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := c.LastMsg(ctx, c.Subject("orders")); err != nil || m != nil {
		t.Fatalf("LastMsg of an empty subject = %v, %v", m, err)
	}
	msg := func() *nats.Msg {
		return &nats.Msg{Subject: c.Subject("orders"), Data: []byte("x"), Header: nats.Header{}}
	}
	ack, err := c.PublishFenced(ctx, msg(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Fenced on a stale sequence: refused.
	if _, err := c.PublishFenced(ctx, msg(), 0); !errors.Is(err, jsclient.ErrFenced) {
		t.Fatalf("stale fence: %v, want ErrFenced", err)
	}
	if _, err := c.PublishFenced(ctx, msg(), ack.Sequence); err != nil {
		t.Fatalf("fence on the last sequence: %v", err)
	}
}

func TestLease(t *testing.T) {
	nc := connect(t)
	ctx := context.Background()
	c, err := jsclient.New(ctx, nc, jsclient.Config{LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := c.AcquireLease(ctx, "k", "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AcquireLease(ctx, "k", "b"); !errors.Is(err, jsclient.ErrLeaseHeld) {
		t.Fatalf("second acquire: %v, want ErrLeaseHeld", err)
	}
	rev2, err := c.RenewLease(ctx, "k", "a", rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("renew: %d, %v", rev2, err)
	}
	if _, err := c.RenewLease(ctx, "k", "a", rev); !errors.Is(err, jsclient.ErrLeaseLost) {
		t.Fatalf("renew on a stale revision: %v, want ErrLeaseLost", err)
	}
	if err := c.ReleaseLease(ctx, "k", rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AcquireLease(ctx, "k", "b"); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}

// TestPrevMsg: the subject's previous message is found however many other
// subjects' messages lie between, at the start of the stream, and not at
// all before the subject's first message.
func TestPrevMsg(t *testing.T) {
	nc := connect(t)
	ctx := context.Background()
	c, err := jsclient.New(ctx, nc, jsclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	// ferry.a at the sequences in mine, ferry.b everywhere else: gaps of
	// 0, 1, 70 and 1,000 other messages.
	mine := map[uint64]bool{}
	var seqs []uint64
	seq := uint64(0)
	for _, gap := range []int{0, 0, 1, 70, 1000, 3} {
		for i := 0; i < gap; i++ {
			if _, err := js.Publish(ctx, "ferry.b", nil); err != nil {
				t.Fatal(err)
			}
			seq++
		}
		if _, err := js.Publish(ctx, "ferry.a", nil); err != nil {
			t.Fatal(err)
		}
		seq++
		mine[seq] = true
		seqs = append(seqs, seq)
	}
	for i, s := range seqs {
		for _, before := range []uint64{s, s + 1} {
			m, err := c.PrevMsg(ctx, "ferry.a", before)
			if err != nil {
				t.Fatal(err)
			}
			want := uint64(0)
			switch {
			case before == s+1:
				want = s
			case i > 0:
				want = seqs[i-1]
			}
			got := uint64(0)
			if m != nil {
				got = m.Sequence
			}
			if got != want {
				t.Errorf("PrevMsg(ferry.a, before %d) = %d, want %d", before, got, want)
			}
		}
	}
	if m, err := c.PrevMsg(ctx, "ferry.none", seq+1); err != nil || m != nil {
		t.Fatalf("PrevMsg of a subject without messages = %v, %v", m, err)
	}
}

// TestCheckConnRefusesReconnectBuffer: a publisher's connection must not
// buffer while it reconnects (jsclient.CheckConn).
func TestCheckConnRefusesReconnectBuffer(t *testing.T) {
	nc := connect(t, nats.Name("with the default reconnect buffer"))
	if _, err := jsclient.New(context.Background(), nc, jsclient.Config{}); !errors.Is(err, jsclient.ErrReconnectBuffer) {
		t.Fatalf("New with the default reconnect buffer: %v, want ErrReconnectBuffer", err)
	}
}
