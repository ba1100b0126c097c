package demo_test

import (
	"bytes"
	"context"
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
			c.cfg.Out, c.cfg.Dir, c.cfg.Seed = &out, t.TempDir(), 7
			res, err := demo.Run(context.Background(), c.cfg)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			if !res.Report.OK() || !res.Report.FeedChecked {
				t.Fatalf("verification: %v (feed checked %v)\n%s", res.Report.Err(), res.Report.FeedChecked, out.String())
			}
			if res.Written <= res.Loaded || res.Applied != res.Written || res.Report.Written != int(res.Written) {
				t.Errorf("written %d (load %d), applied %d, files hold %d: want more than the load, all applied", res.Written, res.Loaded, res.Applied, res.Report.Written)
			}
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
			for _, want := range []string{"curl -s http://127.0.0.1:", "/v1/tables/orders/rows", "written", "applied", "OK: the receiver holds exactly"} {
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
		})
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
