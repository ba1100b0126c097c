package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/demo"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/receiver/store"
)

func TestRun(t *testing.T) {
	cases := []struct {
		name string
		cfg  demo.Config
	}{
		{"FixedRateWithBursts", demo.Config{Rate: 5000, Burst: 3, TxSize: 3, RowSize: 150, Duration: 2 * time.Second}},
		{"CanaryWriteBack", demo.Config{Rate: 2000, TxSize: 3, Duration: 2 * time.Second, CanaryRate: 100}},
		{"MaxRate", demo.Config{Rate: 0, TxSize: 8, Duration: time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			// Readings often, so that some fall while the loads run.
			c.cfg.Out, c.cfg.Dir, c.cfg.Seed, c.cfg.Interval = &out, t.TempDir(), 7, 20*time.Millisecond
			res, err := demo.Run(context.Background(), c.cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			if !res.Report.OK() || !res.Report.FeedChecked {
				t.Fatalf("verification: %v (feed checked %v)\n%s", res.Report.Err(), res.Report.FeedChecked, out.String())
			}
			if res.Written == 0 || res.Applied != res.Written || res.Report.Written != int(res.Written) {
				t.Errorf("written %d, applied %d, files hold %d: want changes, all applied", res.Written, res.Applied, res.Report.Written)
			}
			checkRollout(t, res, out.String())
			if c.cfg.CanaryRate > 0 {
				wb := res.WriteBack
				if wb == nil || !wb.OK() {
					t.Fatalf("write-back verification: %+v\n%s", wb, out.String())
				}
				if wb.Applied == 0 || wb.Rejected == 0 || wb.Applied+wb.Rejected != wb.Submitted {
					t.Errorf("write-back: %s; want applied and rejected ones, each with an outcome", wb)
				}
				if !strings.Contains(out.String(), "Write-back: ") || !strings.Contains(out.String(), "OK: every command has exactly one outcome") {
					t.Errorf("output lacks the write-back verdict:\n%s", out.String())
				}
			} else if res.WriteBack != nil {
				t.Errorf("write-back ran without a canary")
			}
			if c.cfg.Rate > 0 && res.Latency.Count == 0 {
				t.Errorf("no latency measured at a fixed rate")
			}
			if res.Ratio <= 1 {
				t.Errorf("compression ratio %.2f, want > 1 on JSON rows", res.Ratio)
			}
			for _, want := range []string{"curl -s http://127.0.0.1:", "/v1/tables/orders/rows", "written", "applied", "OK: the receiver holds exactly the legacy's rows"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String(), "\x1b[") {
				t.Errorf("plain output holds terminal escapes")
			}
			// The row the output suggests to query exists at the end.
			m := regexp.MustCompile(`/v1/tables/stock/rows/(\S+)`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("output suggests no stock row:\n%s", out.String())
			}
			key, _ := url.PathUnescape(m[1])
			st, err := store.Open(filepath.Join(c.cfg.Dir, "receiver", receiver.StoreDir))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, found, err := st.Get("stock", []byte(key)); err != nil || !found {
				t.Errorf("the suggested row stock/%s is not in the receiver (found %v, %v)", key, found, err)
			}
			checkDumpsLoaded(t, c.cfg.Dir, st)
		})
	}
}

// checkRollout checks the roll-out's side of a run: the truth had the
// legacy's existing rows, every table's load was done at the receiver with
// every row the loader sent, and the gate was closed while loading and
// open at the end.
func checkRollout(t *testing.T, res *demo.Result, out string) {
	t.Helper()
	if res.Report.BaseRows == 0 || int64(res.Report.BaseRows) != res.Loaded {
		t.Errorf("the truth started from %d base rows, the loads sent %d: want the dumps' rows, all sent once", res.Report.BaseRows, res.Loaded)
	}
	tables := map[string]bool{}
	for _, l := range res.Loads {
		tables[l.Table] = true
		if l.State != store.LoadDone || int64(l.Rows) != l.Sent || l.Rows == 0 {
			t.Errorf("load of %s: %s with %d rows at the receiver, %d sent: want done with every row sent", l.Table, l.State, l.Rows, l.Sent)
		}
	}
	for _, want := range []string{"customers", "orders", "order_lines", "stock"} {
		if !tables[want] {
			t.Errorf("no load of %s at the receiver (loads %+v)", want, res.Loads)
		}
	}
	g := res.Gate
	if g.ClosedLoading == 0 || g.OpenLoading != 0 || !g.Final.Ready || g.ReadyAfter <= 0 {
		t.Errorf("gate: %+v; want 503 while loading, never 200 then, 200 at the end", g)
	}
	for _, want := range []string{"ferry load --nats nats://127.0.0.1:", "--table order_lines --key order_id,line_no --mark ", "The receiver turned ready ", "load rows dropped"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// checkDumpsLoaded checks, independently of bench/check, that rows of the
// legacy's dumps are in the receiver's store: the first row of each dump
// that no change touched is there as the load wrote it (its version names
// the load), with the dump's image.
func checkDumpsLoaded(t *testing.T, dir string, st *store.Store) {
	t.Helper()
	dumps, err := filepath.Glob(filepath.Join(dir, "dump", "*.jsonl"))
	if err != nil || len(dumps) != 4 {
		t.Fatalf("dumps %v (%v), want one per table", dumps, err)
	}
	keys := map[string][]string{"customers": {"id"}, "orders": {"id"}, "order_lines": {"order_id", "line_no"}, "stock": {"sku"}}
	for _, path := range dumps {
		table := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		loaded := 0
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var img map[string]json.RawMessage
			if err := json.Unmarshal(line, &img); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			var key []string
			for _, c := range keys[table] {
				key = append(key, string(img[c])) // integer columns: the number's text
			}
			r, found, err := st.Get(table, []byte(strings.Join(key, "/")))
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				continue // deleted by a live change
			}
			if _, isLoad := store.LoadOf(r.Version.Source); !isLoad {
				continue // a live change wrote it since
			}
			if !bytes.Equal(r.Value, line) {
				t.Errorf("%s/%s = %s, the dump has %s", table, strings.Join(key, "/"), r.Value, line)
			}
			loaded++
		}
		if loaded == 0 {
			t.Errorf("no row of %s in the receiver came from its load", path)
		}
	}
}

func TestRunInterrupted(t *testing.T) {
	// Ctrl-C: the legacy stops, the receiver catches up, the check runs.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	res, err := demo.Run(ctx, demo.Config{Rate: 2000, Out: &out, TTY: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if !res.Report.OK() {
		t.Fatalf("verification: %v", res.Report.Err())
	}
	// The loads finish though the legacy was stopped.
	checkRollout(t, res, out.String())
	if !strings.Contains(out.String(), "\x1b[") {
		t.Errorf("terminal output is not redrawn in place")
	}
}

func TestRunBadConfig(t *testing.T) {
	if _, err := demo.Run(context.Background(), demo.Config{RowSize: 3, Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "row-size") {
		t.Errorf("Run with a 3-byte row size = %v, want an error naming --row-size", err)
	}
	if _, err := demo.Run(context.Background(), demo.Config{HTTP: "256.0.0.1:1", Dir: t.TempDir(), Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "--http") {
		t.Errorf("Run with a bad listen address = %v, want an error naming --http", err)
	}
}

// TestRunSaysItRemovesItsFiles: without --dir and --keep the demo's files
// are removed at the end, and it says so, up front and when it does.
func TestRunSaysItRemovesItsFiles(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	var out bytes.Buffer
	res, err := demo.Run(context.Background(), demo.Config{Rate: 2000, Duration: 500 * time.Millisecond, Out: &out})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"(removed at the end; --keep keeps them)", "Removed the demo's files under " + res.Dir} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(res.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still there (%v)", res.Dir, err)
	}
}
