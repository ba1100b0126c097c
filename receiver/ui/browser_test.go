package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

// txs makes n transactions of 2 changes in table, keys <tag><i>-<j>,
// committed at commit + i µs.
func txs(n int, table, tag string, commit time.Time) []format.Tx {
	out := make([]format.Tx, n)
	for i := range out {
		out[i].CommitTime = commit.UnixNano() + int64(i)*1000
		for j := 0; j < 2; j++ {
			out[i].Changes = append(out[i].Changes, format.Change{Table: table, Op: format.OpUpsert,
				Key: []byte(fmt.Sprintf("%s%04d-%d", tag, i, j)), After: []byte(fmt.Sprintf(`{"i":%d,"j":%d,"sku":"%s-%d"}`, i, j, tag, i))})
		}
	}
	return out
}

// stockErrorOffset is the offset the receiver's status names for stock's
// error.
func stockErrorOffset(t *testing.T, r *receiver.Receiver) int64 {
	t.Helper()
	for _, s := range r.Status().Sources {
		if s.Source == "stock" && s.ErrorFile != "" {
			return s.ErrorOffset
		}
	}
	t.Fatal("stock has no error in the receiver's status")
	return 0
}

// commas formats n as the page does (1,234,567).
func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// chromium finds Debian's chromium (make deps installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium not found (Debian package chromium): run make deps")
	return ""
}

// browser starts headless Chromium with a fresh profile; it is stopped at
// the end of the test. A browser that exits before it listens (seen once on
// a machine busy with the rest of the suite: "chrome failed to start" with
// nothing but its usual warnings) is started again, up to three times.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
			chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
			chromedp.WindowSize(1280, 1000))...)
		bctx, bcancel := chromedp.NewContext(actx)
		// Generous: the machine may be saturated; conditions are waited on.
		bctx, tcancel := context.WithTimeout(bctx, 3*time.Minute)
		if err = chromedp.Do(bctx); err == nil { // starts the browser
			t.Cleanup(func() { tcancel(); bcancel(); acancel() })
			return bctx
		}
		tcancel()
		bcancel()
		acancel()
		t.Logf("starting Chromium (attempt %d of 3): %v", attempt, err)
	}
	t.Fatalf("starting Chromium %s: %v", exe, err)
	return nil
}

// pageState is what the test reads off the rendered page (the DOM, not the
// API): what a person looking at it would see.
type pageState struct {
	Gate       string            `json:"gate"`
	Verdict    string            `json:"verdict"`
	Reason     string            `json:"reason"`
	Sources    map[string]string `json:"sources"` // source -> state badge
	LagSeconds map[string]string `json:"lag_seconds"`
	LagBytes   map[string]string `json:"lag_bytes"`
	Errors     map[string]string `json:"errors"` // source -> its card's error text
	Samples    map[string]int    `json:"samples"`
	ErrorRows  []string          `json:"error_rows"`
	Conn       string            `json:"conn"`
	Overflow   bool              `json:"overflow"`
	Loads      string            `json:"loads"`
	Commands   string            `json:"commands"`
}

const readPage = `(() => {
  const q = (s) => document.querySelector(s);
  const out = {gate: q("#gate").dataset.state, verdict: q("#gate-verdict").textContent, reason: q("#gate-reason").textContent,
    sources: {}, lag_seconds: {}, lag_bytes: {}, errors: {}, samples: {}, error_rows: [], conn: q("#conn").dataset.state,
    overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
    loads: q("#loads").textContent, commands: q("#commands").textContent};
  for (const c of document.querySelectorAll(".source")) {
    const n = c.dataset.source;
    out.sources[n] = c.querySelector(".badge").textContent;
    out.lag_seconds[n] = c.querySelector(".lag-seconds").firstChild ? c.querySelector(".lag-seconds").firstChild.textContent : "";
    out.lag_bytes[n] = c.querySelector(".lag-bytes").firstChild ? c.querySelector(".lag-bytes").firstChild.textContent : "";
    const e = c.querySelector(".error");
    out.errors[n] = e.hidden ? "" : e.textContent;
    out.samples[n] = Number(c.dataset.samples || 0);
  }
  for (const r of document.querySelectorAll("#errors tbody tr")) out.error_rows.push(r.textContent);
  return JSON.stringify(out);
})()`

// TestCockpitInChromium drives the cockpit in real headless Chromium against
// a running receiver: both sources and their lag show, the gate turns from
// red (old data: the receiver lags) to green once fresh changes are applied,
// and a corrupt message's stop shows with its file and offset.
func TestCockpitInChromium(t *testing.T) {
	exe := chromium(t)
	srv := wiretest.StartServer(t)
	nc, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	pub := &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}
	publish := func(msgs ...wiretest.Msg) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}

	// Each source: 40 transactions committed two hours ago, then 40 fresh
	// ones. Published in phases: everything of shop, and stock with a hole
	// (a lost message): stock stops at the gap and lags two hours behind
	// what the stream holds (gate red); the re-shipped range (gate green);
	// then stock's last message, corrupt.
	old, fresh := time.Now().Add(-2*time.Hour), time.Now()
	msgs := map[string][]wiretest.Msg{}
	for _, src := range []string{"shop", "stock"} {
		dir := t.TempDir()
		wiretest.WriteSegments(t, dir, src, append(txs(40, "orders", src+"-old-", old), txs(40, "orders", src+"-new-", fresh)...), 0)
		msgs[src] = wiretest.Messages(t, dir, src, 1024)
	}
	stock := msgs["stock"]
	const hole = 2
	if len(stock) < 8 || stock[hole+1].Batch.LastCommit > fresh.Add(-time.Hour).UnixNano() {
		t.Fatalf("stock cut into %d messages, message %d committed at %d; want several, the first ones old", len(stock), hole+1, stock[hole+1].Batch.LastCommit)
	}
	bad := stock[len(stock)-1]
	publish(msgs["shop"]...)
	publish(stock[:hole]...)
	publish(stock[hole+1 : len(stock)-1]...)

	r, err := receiver.New(receiver.WithNATS(nc), receiver.WithDataDir(t.TempDir()), receiver.WithReadyLag(30*time.Second),
		receiver.WithSources("shop", "stock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	web := httptest.NewServer(r.Handler())
	t.Cleanup(func() {
		web.CloseClientConnections()
		web.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})

	shots := t.TempDir()
	bctx := browser(t, exe)

	if err := chromedp.Do(bctx, chromedp.Navigate(web.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#gate"))); err != nil {
		t.Fatalf("loading %s/ui/ in Chromium: %v", web.URL, err)
	}
	read := func() pageState {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](readPage))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		var ps pageState
		if err := json.Unmarshal([]byte(s), &ps); err != nil {
			t.Fatalf("page state %q: %v", s, err)
		}
		return ps
	}
	waitPage := func(what string, cond func(pageState) bool) pageState {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			ps := read()
			if cond(ps) {
				return ps
			}
			if time.Now().After(deadline) {
				t.Fatalf("the page never showed %s; it shows %+v", what, ps)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	shot := func(name string) string {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		p := filepath.Join(shots, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Phase 1: shop is applied and does not lag (nothing of it waits in the
	// stream, however old its last write); stock stopped at the gap and
	// lags by the age of the first message it cannot apply: the gate is red.
	ps := waitPage("stock lagging two hours, gate red", func(ps pageState) bool {
		return ps.Gate == "not-ready" && len(ps.Sources) == 2 && ps.LagSeconds["shop"] == "0 ms" &&
			strings.HasSuffix(ps.LagSeconds["stock"], " h") && strings.Contains(ps.Reason, "stock")
	})
	if ps.Verdict != "NOT READY" || ps.Sources["shop"] != "ok" || ps.Conn != "live" || !strings.Contains(ps.Errors["stock"], "gap") {
		t.Fatalf("phase 1: %+v", ps)
	}
	if ps.Loads != "none" || ps.Commands != "none" {
		t.Fatalf("loads %q, commands %q: want none (the status has no such fields yet)", ps.Loads, ps.Commands)
	}
	shot("1-lagging.png")

	// Phase 2: the lost range is re-shipped (new message ids, as a
	// shipper's repair): stock catches up and the gate turns green.
	repair := append([]wiretest.Msg(nil), stock[hole:len(stock)-1]...)
	for i := range repair {
		repair[i].Batch.Repair = 1
	}
	publish(repair...)
	ps = waitPage("the gate green", func(ps pageState) bool { return ps.Gate == "ready" })
	for _, src := range []string{"shop", "stock"} {
		if l := ps.LagSeconds[src]; l == "" || l == "—" || strings.HasSuffix(l, " h") || ps.Sources[src] != "ok" {
			t.Fatalf("%s on the ready page: %s, lag %q", src, ps.Sources[src], l)
		}
	}
	if !strings.HasPrefix(ps.Verdict, "READY") || ps.Reason != "" || ps.Errors["stock"] != "" {
		t.Fatalf("phase 2: %+v", ps)
	}
	shot("2-ready.png")

	// Phase 3: stock's next message arrives corrupt: stock stops, the gate
	// is red again, and the error names the segment file and the offset.
	bad.Raw = append([]byte(nil), bad.Raw...)
	bad.Raw[len(bad.Raw)/2] ^= 0x40
	publish(bad)
	file := format.SegmentName("stock", bad.Batch.Segment)
	ps = waitPage("stock stopped with its error", func(ps pageState) bool {
		return ps.Gate == "not-ready" && ps.Sources["stock"] == "stopped" && strings.Contains(ps.Errors["stock"], file) &&
			len(ps.ErrorRows) > 1 && strings.Contains(ps.ErrorRows[0], "corrupt")
	})
	if !strings.Contains(ps.Reason, "stock stopped") || !strings.Contains(ps.Errors["stock"], "corrupt") || ps.Errors["shop"] != "" {
		t.Fatalf("phase 3: %+v", ps)
	}
	// Newest first: the corrupt message now (its offset), the gap of
	// phase 1 below it, kept after it cleared.
	if !strings.Contains(ps.ErrorRows[0], file) || !strings.Contains(ps.ErrorRows[0], "(now)") ||
		!strings.Contains(ps.ErrorRows[0], commas(stockErrorOffset(t, r))) || !strings.Contains(ps.ErrorRows[0], "corrupt") ||
		!strings.Contains(ps.ErrorRows[1], "gap") || strings.Contains(ps.ErrorRows[1], "(now)") {
		t.Fatalf("recent errors: %q; want stock's corrupt message in %s, then the cleared gap", ps.ErrorRows, file)
	}
	// The history behind the charts has samples by now (one every 2 s).
	waitPage("chart samples", func(ps pageState) bool { return ps.Samples["shop"] >= 2 })
	// The row browser and the live feed read the API through the page.
	err = chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS("#browse-table"), "orders"),
		chromedp.SetValue(chromedp.CSS("#browse-prefix"), "shop-new-000"),
		chromedp.Click(chromedp.CSS("#browse button")),
		chromedp.WaitVisible(chromedp.CSS("#rows-table")),
		chromedp.Click(chromedp.CSS("#feed-toggle")),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#feed tbody tr").length >= 20`, chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		t.Fatalf("row browser / feed: %v", err)
	}
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#rows-table tbody tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	if rows != 20 { // shop-new-0000..0009, two changes each
		t.Fatalf("row browser shows %d rows with prefix shop-new-000, want 20", rows)
	}
	main := shot("3-stopped.png")
	if out := os.Getenv("FERRY_COCKPIT_SCREENSHOT"); out != "" {
		b, err := os.ReadFile(main)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A phone: the page fits its width (no sideways scrolling).
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	ps = waitPage("the phone layout", func(ps pageState) bool { return ps.Conn == "live" })
	if ps.Overflow {
		t.Fatalf("on a 390 px wide screen the page scrolls sideways")
	}
	shot("4-phone.png")
	t.Logf("screenshots in %s", shots)
}

// TestCockpitOffAndToken: with --ui=false there is no page; with a token the
// page's files load (they carry no data) but its data needs the token.
func TestCockpitOffAndToken(t *testing.T) {
	srv := wiretest.StartServer(t)
	nc, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	for _, tc := range []struct {
		name                 string
		opts                 []receiver.Option
		page, history, authd int
	}{
		{"Default", nil, 200, 200, 200},
		{"Off", []receiver.Option{receiver.WithUI(false)}, 404, 404, 404},
		{"Token", []receiver.Option{receiver.WithToken("s3cret")}, 200, 401, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := receiver.New(append([]receiver.Option{receiver.WithNATS(nc), receiver.WithDataDir(t.TempDir())}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			web := httptest.NewServer(r.Handler())
			defer web.Close()
			get := func(path, token string) int {
				req, _ := http.NewRequest("GET", web.URL+path, nil)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			for _, p := range []string{"/ui/", "/ui/cockpit.js", "/ui/cockpit.css"} {
				if got := get(p, ""); got != tc.page {
					t.Errorf("GET %s: %d, want %d", p, got, tc.page)
				}
			}
			if got := get("/ui/history", ""); got != tc.history {
				t.Errorf("GET /ui/history without a token: %d, want %d", got, tc.history)
			}
			if got := get("/ui/history", "s3cret"); got != tc.authd {
				t.Errorf("GET /ui/history with the token: %d, want %d", got, tc.authd)
			}
		})
	}
}

// TestCockpitTokenInChromium: with an API token the page loads, asks for
// the token (its data requests are refused without it), and with
// /ui/#token=… shows the receiver's figures and drops the token from the
// address bar.
func TestCockpitTokenInChromium(t *testing.T) {
	exe := chromium(t)
	srv := wiretest.StartServer(t)
	nc, js := srv.Connect(t)
	wiretest.CreateStream(t, js, "FERRY", "ferry")
	r, err := receiver.New(receiver.WithNATS(nc), receiver.WithDataDir(t.TempDir()), receiver.WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	web := httptest.NewServer(r.Handler())
	t.Cleanup(func() {
		web.CloseClientConnections()
		web.Close()
		cancel()
		<-done
	})
	bctx := browser(t, exe)
	state := `JSON.stringify({login: !document.querySelector("#login").hidden, conn: document.querySelector("#conn").dataset.state,
		stream: document.querySelector("#stream").textContent, hash: location.hash})`
	wait := func(what, cond string) string {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(90*time.Second))); err != nil {
			s, _ := chromedp.Run(bctx, chromedp.Evaluate[string](state))
			t.Fatalf("the page never showed %s: %v; it shows %s", what, err, s)
		}
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](state))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(web.URL+"/ui/")); err != nil {
		t.Fatal(err)
	}
	s := wait("the token form", `!document.querySelector("#login").hidden && document.querySelector("#conn").dataset.state === "error"`)
	if strings.Contains(s, "FERRY") {
		t.Fatalf("without the token the page shows data: %s", s)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(web.URL+"/ui/#token=s3cret"), chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	s = wait("the receiver's figures", `document.querySelector("#conn").dataset.state === "live" && document.querySelector("#stream").textContent.includes("FERRY")`)
	if strings.Contains(s, "s3cret") {
		t.Fatalf("the token stays in the address bar: %s", s)
	}
}
