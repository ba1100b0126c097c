package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/load"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// TestCockpitLoadGateInChromium: a receiver told to wait for the initial
// load of orders (--wait-load) shows, in real headless Chromium, the gate
// red while the load runs (its rows so far of the estimate in the loads
// panel), then green as the load's done message is applied.
func TestCockpitLoadGateInChromium(t *testing.T) {
	exe := chromium(t)
	srv := wiretest.StartServer(t)
	nc, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	pub := &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}
	dir := t.TempDir()
	wiretest.WriteSegments(t, dir, "shop", txs(20, "orders", "live-", time.Now()), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := pub.Publish(ctx, wiretest.Messages(t, dir, "shop", 1024)...); err != nil {
		t.Fatal(err)
	}
	comp, err := wire.NewCompressor(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	enc := load.NewEncoder(comp)
	send := func(h load.Header, body []byte) {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: load.Subject("ferry", h.Table), Header: nats.Header(h.Encode()), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	chunk := func(i int) {
		t.Helper()
		tx := &format.Tx{ID: "L1", CommitTime: time.Now().UnixNano()}
		for k := i * 300; k < (i+1)*300; k++ {
			tx.Changes = append(tx.Changes, format.Change{Table: "orders", Op: format.OpInsert, Key: fmt.Appendf(nil, "old-%05d", k), After: fmt.Appendf(nil, `{"k":%d}`, k)})
		}
		h := load.Header{Load: "L1", Kind: load.KindChunk, Table: "orders", Chunk: uint64(i), Codec: wire.CodecZstd, Last: true,
			Hi: load.KeyOf(string(tx.Changes[len(tx.Changes)-1].Key)), Time: tx.CommitTime}
		body, err := enc.Chunk(nil, &h, tx)
		if err != nil {
			t.Fatal(err)
		}
		send(h, body)
	}
	begin, err := load.EncodeBegin(&load.Begin{Table: "orders", Input: "postgresql", KeyColumns: []string{"id"}, Estimate: 600, ChunkRows: 300, Started: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	send(load.Header{Load: "L1", Kind: load.KindBegin, Table: "orders", Estimate: 600, Time: time.Now().UnixNano()}, begin)
	chunk(0)

	r, err := receiver.New(receiver.WithNATS(nc), receiver.WithDataDir(t.TempDir()), receiver.WithReadyLag(time.Minute), receiver.WithWaitLoad("orders"))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	web := httptest.NewServer(r.Handler())
	t.Cleanup(func() {
		web.CloseClientConnections()
		web.Close()
		rcancel()
		if err := <-done; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	shots := t.TempDir()
	bctx := browser(t, exe)
	if err := chromedp.Do(bctx, chromedp.Navigate(web.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#gate"))); err != nil {
		t.Fatalf("loading %s/ui/ in Chromium: %v", web.URL, err)
	}
	type loadPage struct {
		Gate, Reason, State, Row, Checks string
	}
	read := func() loadPage {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](`(() => {
  const q = (s) => document.querySelector(s);
  const row = q('#loads tr.load[data-table="orders"]');
  return JSON.stringify({Gate: q("#gate").dataset.state, Reason: q("#gate-reason").textContent,
    State: row ? row.dataset.state : "", Row: row ? row.textContent : "", Checks: q("#gate-checks").textContent});
})()`))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		var p loadPage
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wait := func(what string, cond func(loadPage) bool) loadPage {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			p := read()
			if cond(p) {
				return p
			}
			if time.Now().After(deadline) {
				t.Fatalf("the page never showed %s; it shows %+v", what, p)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		// FERRY_COCKPIT_SHOTS=DIR keeps a copy (the temp dir goes).
		if out := os.Getenv("FERRY_COCKPIT_SHOTS"); out != "" {
			if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Caught up, shop fresh, but the load of orders runs: red.
	p := wait("the gate red on the running load", func(p loadPage) bool {
		return p.Gate == "not-ready" && p.State == "loading" && strings.Contains(p.Row, "300 of ~600")
	})
	if !strings.Contains(p.Reason, "initial load L1 of table orders") || !strings.Contains(p.Checks, "✗ initial load L1 of orders loading") {
		t.Fatalf("the red gate: %+v", p)
	}
	shot("load-1-loading.png")
	// The last chunk and the done message: green.
	chunk(1)
	send(load.Header{Load: "L1", Kind: load.KindDone, Table: "orders", Rows: 600, Chunks: 2, Time: time.Now().UnixNano()}, nil)
	p = wait("the gate green once the load is done", func(p loadPage) bool { return p.Gate == "ready" && p.State == "done" })
	if !strings.Contains(p.Row, "600 of ~600") || !strings.Contains(p.Checks, "✓ initial load L1 of orders done") {
		t.Fatalf("the green gate: %+v", p)
	}
	shot("load-2-done.png")
	t.Logf("screenshots in %s", shots)
}
