package inbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/command"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/ferrysync/ferry/shipper/inbox"
	"github.com/nats-io/nats.go/jetstream"
)

func publish(t *testing.T, js jetstream.JetStream, id, key string) {
	t.Helper()
	c := command.Command{ID: id, Origin: "svc", Source: "shop", Table: "orders", Key: key, Op: command.OpInsert,
		After: json.RawMessage(`{"qty":1}`), Submitted: time.Now().UTC()}
	b, err := command.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), command.Subject(command.DefaultPrefix, "shop"), b, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// runAgent runs an agent until the returned stop is called.
func runAgent(t *testing.T, js jetstream.JetStream, changes, dir string) (*inbox.Agent, func()) {
	t.Helper()
	ag, err := inbox.New(js, inbox.Config{Source: "shop", ChangeDir: changes, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent: %v", err)
		}
	}
	t.Cleanup(stop)
	return ag, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inboxIDs returns the command ids in the inbox files.
func inboxIDs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := inbox.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range files {
		cmds, err := inbox.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// TestAgentRedeliveryAfterOutcome: a command whose outcome the agent saw
// is not delivered again when the stream offers it again — the consumer
// forgot its acknowledgements (a nats-server killed before it wrote its
// consumer state) — even by an agent restarted meanwhile; a new command
// is delivered.
func TestAgentRedeliveryAfterOutcome(t *testing.T) {
	srv := wiretest.StartServer(t)
	_, js := srv.Connect(t)
	changes := t.TempDir()
	dir := filepath.Join(changes, "inbox")
	w, err := format.OpenWriter(changes, "shop", format.WithSync(format.SyncAlways, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	ag, stop := runAgent(t, js, changes, dir)
	publish(t, js, "c-1", "k1")
	publish(t, js, "c-2", "k2")
	waitFor(t, "both commands in the inbox", func() bool { return len(inboxIDs(t, dir)) == 2 })
	// The legacy carries out c-1 and refuses c-2.
	if _, err := w.Commit(&format.Tx{CommitTime: time.Now().UnixNano(), Origin: "svc", Command: "c-1",
		Changes: []format.Change{{Table: "orders", Key: []byte("k1"), Op: format.OpInsert, After: []byte(`{"qty":1}`)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Reject(format.Rejection{Time: time.Now().UnixNano(), Command: "c-2", Origin: "svc", Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the inbox to empty", func() bool { return len(inboxIDs(t, dir)) == 0 && ag.Stats().Outcomes == 2 })
	stop()

	// The consumer forgets everything: both are offered again.
	if err := js.DeleteConsumer(context.Background(), command.DefaultStream, "ferry-inbox-shop"); err != nil {
		t.Fatal(err)
	}
	ag, _ = runAgent(t, js, changes, dir)
	publish(t, js, "c-3", "k3")
	waitFor(t, "the new command in the inbox", func() bool { return len(inboxIDs(t, dir)) > 0 })
	if ids := inboxIDs(t, dir); len(ids) != 1 || ids[0] != "c-3" {
		t.Fatalf("inbox holds %v, want only c-3 (c-1 and c-2 have their outcomes)", ids)
	}
	waitFor(t, "the agent to see the duplicates", func() bool { return ag.Stats().Duplicates >= 2 })
	if _, err := os.Stat(filepath.Join(dir, ".agent-state.json")); err != nil {
		t.Fatalf("no state file: %v", err)
	}
}

// TestAgentLostDelivery: a command the server delivered to an agent that
// never wrote it (killed, or its connection dropped, before the inbox file)
// comes back after AckWait, even though the agent acknowledged a later
// command meanwhile. With AckAll acknowledgements the later one's covered
// it and the command was lost for good (TestFaultWriteBackKill9).
func TestAgentLostDelivery(t *testing.T) {
	srv := wiretest.StartServer(t)
	_, js := srv.Connect(t)
	changes := t.TempDir()
	dir := filepath.Join(changes, "inbox")
	cfg := inbox.Config{Source: "shop", ChangeDir: changes, Dir: dir, AckWait: 300 * time.Millisecond}
	start := func() func() {
		ag, err := inbox.New(js, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ag.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent: %v", err)
			}
		}
	}
	stop := start() // creates the durable consumer
	waitFor(t, "the agent's consumer", func() bool {
		_, err := js.Consumer(context.Background(), command.DefaultStream, "ferry-inbox-shop")
		return err == nil
	})
	stop()
	publish(t, js, "c-1", "k1")
	// The server delivers c-1 to an agent that dies with it.
	cons, err := js.Consumer(context.Background(), command.DefaultStream, "ferry-inbox-shop")
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := m.Metadata(); md == nil || md.NumDelivered != 1 {
		t.Fatalf("delivery metadata %+v", md)
	}
	publish(t, js, "c-2", "k2")
	stop = start()
	defer stop()
	waitFor(t, "both commands in the inbox", func() bool { return len(inboxIDs(t, dir)) == 2 })
	ids := inboxIDs(t, dir)
	if !(ids[0] == "c-1" && ids[1] == "c-2") {
		t.Fatalf("inbox holds %v, want c-1 (its delivery lost, named by its sequence) and c-2", ids)
	}
}

// TestConsumeOffersEarlierNames: a file whose name sorts before files
// already handled (a command offered again after a lost delivery) is
// offered too; a handled file is not offered again by the same process.
func TestConsumeOffersEarlierNames(t *testing.T) {
	dir := t.TempDir()
	write := func(seq uint64, id string) {
		t.Helper()
		c := command.Command{ID: id, Origin: "svc", Source: "shop", Table: "orders", Key: id, Op: command.OpInsert,
			After: json.RawMessage(`{}`), Submitted: time.Now().UTC(), Seq: seq}
		b, err := command.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		// Whole or not at all, as the agent writes them.
		tmp := filepath.Join(dir, ".tmp-"+inbox.FileName(seq))
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, inbox.FileName(seq))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- inbox.Consume(ctx, dir, inbox.ConsumeConfig{Poll: time.Millisecond}, func(_ context.Context, cmds []command.Command) error {
			for _, c := range cmds {
				got <- c.ID
			}
			return nil
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case id := <-got:
			return id
		case <-time.After(30 * time.Second):
			t.Fatal("no file offered")
			return ""
		}
	}
	write(20, "c-20")
	if id := next(); id != "c-20" {
		t.Fatalf("offered %s, want c-20", id)
	}
	write(10, "c-10")
	if id := next(); id != "c-10" {
		t.Fatalf("offered %s, want c-10 (an earlier name after a later one)", id)
	}
	write(30, "c-30")
	if id := next(); id != "c-30" {
		t.Fatalf("offered %s, want c-30: a handled file was offered again", id)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
