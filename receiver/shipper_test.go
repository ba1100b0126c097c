package receiver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
)

// The real shipper and the receiver agree on the wire: a writer rotating
// segments and writing one transaction far larger than a message, shipped
// while it writes, arrives whole and once.
func TestEndToEndWithShipper(t *testing.T) {
	srv := wiretest.StartServer(t)
	nc, _ := srv.Connect(t)
	dir := t.TempDir()
	w, err := format.OpenWriter(dir, "legacy", format.WithMaxSegmentSize(64<<10), format.WithHeartbeat(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// 64 KiB messages: the big transaction is split into ~10 parts.
	// shipper.Group: the path ferry ship runs (stream-creation retry).
	g, err := shipper.NewGroup(nc, jsclient.Config{}, []shipper.SourceConfig{{Name: "legacy", Dir: dir}}, shipper.WithMaxBatchBytes(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	shipDone := make(chan error, 1)
	go func() { shipDone <- g.Run(ctx) }()
	stats := func() shipper.Stats {
		if ss := g.Shippers(); len(ss) > 0 {
			return ss[0].Stats()
		}
		return shipper.Stats{}
	}
	defer func() { cancel(); <-shipDone }()

	rnc, _ := srv.Connect(t)
	r, err := receiver.New(receiver.WithNATS(rnc), receiver.WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()

	txs := genTxs(2000, 2, "t", "e")
	// ~2.4 MB and 12,000 changes: split over several messages, with a
	// change count larger than the first piece the shipper reads of it.
	big := genTxs(1, 12000, "big", "B")
	want := 0
	for i := range txs {
		if i == 1000 {
			if _, err := w.Commit(&big[0]); err != nil {
				t.Fatal(err)
			}
			want += len(big[0].Changes)
		}
		if _, err := w.Commit(&txs[i]); err != nil {
			t.Fatal(err)
		}
		want += len(txs[i].Changes)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for r.Positions()["legacy"].Changes != uint64(want) {
		if time.Now().After(deadline) {
			t.Fatalf("not everything applied: status %+v, shipper %+v", r.Status(), stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := dumpStore(t, r.Store(), "t", "big")
	if len(d.Changes) != want || len(d.Rows) != want {
		t.Fatalf("%d changes, %d rows; want %d", len(d.Changes), len(d.Rows), want)
	}
	seen := map[string]bool{}
	for _, c := range d.Changes {
		v := c.Version
		k := fmt.Sprintf("%s:%d:%d:%d", v.Source, v.Segment, v.Offset, v.Index)
		if seen[k] {
			t.Fatalf("change %+v applied twice", v)
		}
		seen[k] = true
	}
	if st := r.Status(); st.Sources[0].State != "ok" {
		t.Fatalf("status %+v", st.Sources[0])
	}
	// The big transaction came in parts, and became visible whole.
	if segs := r.Positions()["legacy"].Segment; segs < 3 {
		t.Fatalf("the writer rotated to segment %d only", segs)
	}
	if st := stats(); st.Batches < 30 {
		t.Fatalf("the shipper sent %d messages: the test did not split much", st.Batches)
	}
}

// Shippers and writers restarted between rounds (each writer starts a new
// segment; one seals its last segment only after its shipper stopped)
// continue the chain the receiver follows: nothing lost, nothing twice.
func TestEndToEndShipperAndWriterRestart(t *testing.T) {
	srv := wiretest.StartServer(t)
	nc, _ := srv.Connect(t)
	rnc, _ := srv.Connect(t)
	dir := t.TempDir()
	r, err := receiver.New(receiver.WithNATS(rnc), receiver.WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()

	want := 0
	for round := 0; round < 3; round++ {
		w, err := format.OpenWriter(dir, "legacy", format.WithMaxSegmentSize(32<<10))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		g, err := shipper.NewGroup(nc, jsclient.Config{}, []shipper.SourceConfig{{Name: "legacy", Dir: dir}}, shipper.WithMaxBatchBytes(16<<10))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		txs := genTxs(500, 2, "t", fmt.Sprintf("r%d-", round))
		for i := range txs {
			if _, err := w.Commit(&txs[i]); err != nil {
				t.Fatal(err)
			}
			want += len(txs[i].Changes)
		}
		if round == 1 {
			// Applied before the writer closes: the seal of its last segment
			// comes later, through the next shipper.
			w.Sync()
		} else if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("round %d applied", round), 60*time.Second, func() bool {
			return r.Positions()["legacy"].Changes == uint64(want)
		})
		cancel()
		<-done
		if round == 1 {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := dumpStore(t, r.Store(), "t")
	if len(d.Changes) != want || len(d.Rows) != want {
		t.Fatalf("%d changes, %d rows; want %d", len(d.Changes), len(d.Rows), want)
	}
	if s := r.Status().Sources[0]; s.State != "ok" {
		t.Fatalf("status %+v", s)
	}
}
