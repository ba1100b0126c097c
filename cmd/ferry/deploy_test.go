package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/api"
	"github.com/ferrysync/ferry/receiver/wiretest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"
)

// Metric names the alerting rules use before the feature that exports them
// lands (write-back, issue 13; names agreed in receiver/README.md). The test
// fails once one of them is exported, so that it leaves this list.
var pendingMetrics = map[string]bool{}

// metricRef finds the metric names a rule, a runbook or a dashboard uses.
var metricRef = regexp.MustCompile(`\b(?:ferry|process|go)_[a-zA-Z0-9_:]*[a-zA-Z0-9]\b`)

// scrape returns the metric names (histograms as their _bucket/_sum/_count
// series) a /metrics endpoint serves.
func scrape(t *testing.T, url string) (map[string]bool, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names, string(body)
}

// TestDeployRulesAndDashboard checks the alerting rules (promtool, and each
// rule has a runbook) and that the rules and the Grafana dashboard use only
// metrics a running `ferry ship` and `ferry receive` export, scraped from
// their /metrics after shipping, one corrupt change file (shipper errors,
// a stopped source) and one corrupt message (receiver errors).
func TestDeployRulesAndDashboard(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found (Debian package prometheus): run make deps")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	shipRules := filepath.Join(root, "shipper/deploy/ferry-ship.rules.yml")
	recvRules := filepath.Join(root, "receiver/deploy/ferry-receiver.rules.yml")
	dashboard := filepath.Join(root, "receiver/deploy/grafana-ferry.json")
	if out, err := exec.Command(promtool, "check", "rules", shipRules, recvRules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	s := startJetStream(t)
	good, broken := t.TempDir(), t.TempDir()
	end := writeSource(t, good, "shop", 50)
	writeSource(t, broken, "broken", 50)
	segs, _ := format.ListSegments(broken, "broken")
	b, err := os.ReadFile(segs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := wiretest.Frames(broken, "broken")
	if err != nil {
		t.Fatal(err)
	}
	// A payload byte of a frame in the middle: its checksum fails and valid
	// frames follow (corruption, not a torn tail).
	b[frames[len(frames)/2].Off+format.FrameHeaderLen+2] ^= 0x40
	if err := os.WriteFile(segs[0].Path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	shipMetrics, recvHTTP := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "ship.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("nats: %s\nmetrics-addr: %s\nsources:\n  - name: shop\n    dir: %s\n  - name: broken\n    dir: %s\n",
		s.ClientURL(), shipMetrics, good, broken)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var shipLog, recvLog strings.Builder
	envOf := func(w io.Writer) *Env {
		return &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: w, Getenv: func(string) string { return "" }}
	}
	shipDone, recvDone := make(chan error, 1), make(chan error, 1)
	go func() { shipDone <- run(ctx, envOf(&shipLog), []string{"ship", "--config", cfg}) }()
	go func() {
		recvDone <- run(ctx, envOf(&recvLog), []string{"receive", "--nats", s.ClientURL(), "--data", t.TempDir(), "--http", recvHTTP})
	}()
	t.Cleanup(func() {
		cancel()
		<-shipDone
		<-recvDone
	})

	// A corrupt message for a third source stops it in the receiver.
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// The message after it is blocked; a message of source dup published
	// twice (as a repair would) is skipped the second time.
	msgsOf := func(source string) []wiretest.Msg {
		dir := t.TempDir()
		var txs []format.Tx
		for i := 0; i < 20; i++ {
			txs = append(txs, format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{
				{Table: "t", Op: format.OpUpsert, Key: []byte(fmt.Sprint(i)), After: []byte(fmt.Sprintf(`{"v":%d,"pad":"%s"}`, i, strings.Repeat("x", 100)))}}})
		}
		wiretest.WriteSegments(t, dir, source, txs, 0)
		return wiretest.Messages(t, dir, source, 1024)
	}
	evil, dup := msgsOf("evil"), msgsOf("dup")
	if len(evil) < 3 || len(dup) < 1 {
		t.Fatalf("%d messages for evil, %d for dup", len(evil), len(dup))
	}
	// evil applies its first message (a source with nothing applied shares
	// the metrics label _unapplied), then stops on its second.
	bad := evil[1]
	bad.Raw = append([]byte(nil), bad.Raw...)
	bad.Raw[len(bad.Raw)-2] ^= 0x40
	again := dup[0]
	again.Batch.Repair = 1

	client, err := api.NewClient("http://"+recvHTTP, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	published, lastSeq := false, uint64(0)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := client.Status(ctx)
		if err == nil && !published {
			// The receiver runs and the shipper created the stream.
			if _, err := js.Stream(ctx, "FERRY"); err == nil {
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				// dup first: the stored cursor stops before evil's
				// corrupt message, so it tells when dup's were handled.
				pub := &wiretest.Publisher{JS: js, Prefix: "ferry", Codec: wire.CodecZstd}
				if lastSeq, err = pub.Publish(pctx, dup[0], again); err == nil {
					_, err = pub.Publish(pctx, evil[0], bad, evil[2])
				}
				pcancel()
				published = err == nil
			}
		}
		state := map[string]string{}
		var shopAt format.Position
		dupChanges := uint64(0)
		for _, src := range st.Sources {
			if src.Source == "dup" {
				dupChanges = src.Changes
			}
			state[src.Source] = src.State
			if src.Source == "shop" {
				shopAt = format.Position{Segment: src.AppliedSegment, Offset: src.AppliedOffset}
			}
		}
		shipHealth := ""
		if resp, err := http.Get("http://" + shipMetrics + "/healthz"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			shipHealth = string(b)
		}
		if shopAt == end && state["evil"] == "stopped" && strings.Contains(shipHealth, "broken") && dupChanges > 0 && published && st.StreamSeq >= lastSeq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for shop applied to %v, evil stopped in the receiver and broken stopped in the shipper: status %+v (err %v), shipper health %q\nship log:\n%s\nreceive log:\n%s",
				end, st, err, shipHealth, shipLog.String(), recvLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	shipNames, shipText := scrape(t, "http://"+shipMetrics+"/metrics")
	// The lag gauges are set by the receiver's once-a-second loop: wait for
	// its first pass after shop was applied.
	var recvNames map[string]bool
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		var text string
		recvNames, text = scrape(t, "http://"+recvHTTP+"/metrics")
		if strings.Contains(text, `ferry_receiver_lag_seconds{source="shop"}`) {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the receiver never reported the lag of source shop:\n%s", text)
		}
	}
	// The shipper's scrape-time gauges say what happened.
	for _, want := range []string{`ferry_ship_source_stopped{source="broken"} 1`, `ferry_ship_source_stopped{source="shop"} 0`,
		`ferry_ship_errors_total{kind="corruption",source="broken"} 1`} {
		if !strings.Contains(shipText, want+"\n") {
			t.Errorf("shipper metrics lack %s", want)
		}
	}
	if m := regexp.MustCompile(`ferry_ship_disk_free_bytes\{source="shop"\} ([0-9.e+]+)`).FindStringSubmatch(shipText); m == nil || m[1] == "0" {
		t.Errorf("shipper metrics: free disk of shop's change files %v", m)
	}

	for name := range pendingMetrics {
		if shipNames[name] || recvNames[name] {
			t.Errorf("%s is exported now: remove it from pendingMetrics", name)
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "receiver/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range pendingMetrics {
		if !strings.Contains(string(readme), name) {
			t.Errorf("pending metric %s is not agreed in receiver/README.md", name)
		}
	}
	check := func(file, text string, exported ...map[string]bool) {
		t.Helper()
		used := map[string]bool{}
		for _, m := range metricRef.FindAllString(text, -1) {
			used[m] = true
		}
		var missing []string
		for m := range used {
			ok := pendingMetrics[m]
			for _, names := range exported {
				ok = ok || names[m]
			}
			if !ok {
				missing = append(missing, m)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s uses metrics that the binaries do not export: %s", filepath.Base(file), strings.Join(missing, ", "))
		}
		if len(used) == 0 {
			t.Errorf("%s uses no Ferry metric", file)
		}
	}
	for _, rf := range []struct {
		path  string
		names map[string]bool
	}{{shipRules, shipNames}, {recvRules, recvNames}} {
		text, err := os.ReadFile(rf.path)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Groups []struct {
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(text, &doc); err != nil {
			t.Fatalf("%s: %v", rf.path, err)
		}
		n := 0
		for _, g := range doc.Groups {
			for _, r := range g.Rules {
				n++
				if r.Alert == "" || r.Annotations["runbook"] == "" || r.Annotations["summary"] == "" {
					t.Errorf("%s: rule %q needs an alert name, a summary and a runbook", filepath.Base(rf.path), r.Alert)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no rules", rf.path)
		}
		check(rf.path, string(text), rf.names)
	}

	text, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(text, &dash); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	graphs := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		graphs++
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if !metricRef.MatchString(q.Expr) {
				t.Errorf("dashboard panel %q: query %q uses no Ferry metric", p.Title, q.Expr)
			}
		}
	}
	if graphs < 10 {
		t.Errorf("dashboard has %d panels", graphs)
	}
	check(dashboard, string(text), shipNames, recvNames)
}
