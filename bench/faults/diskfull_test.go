package faults_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/faults"
	"github.com/ferrysync/ferry/receiver/api"
)

// fillDisk fills the file system holding dir with a filler file, and
// returns a function that removes it (space returns).
func fillDisk(t *testing.T, dir string) func() {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	must(t, err)
	buf := make([]byte, 64<<10)
	for _, n := range []int{64 << 10, 4096, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	f.Close()
	return func() { must(t, os.Remove(path)) }
}

// waitDiskFull waits until the receiver reports its disk full in
// /v1/status, /readyz and /metrics, and says so in its log, while it still
// serves reads (rows: a page of rows is not empty — a receiver restarted on
// the full disk may hold nothing yet).
func waitDiskFull(t *testing.T, rc *receiver, rows bool) {
	t.Helper()
	c, err := api.NewClient("http://"+rc.http, "", nil)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		st, err := c.Status(ctx)
		if err == nil && st.DiskFull {
			if !strings.Contains(st.NotReadyReason, "disk is full") || !strings.Contains(st.Error, rc.data) {
				t.Fatalf("status on a full disk: reason %q, error %q; want the full disk and %s named", st.NotReadyReason, st.Error, rc.data)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("receiver never reported its disk full: %+v, %v", st, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + rc.http + path)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz on a full disk: %d, want 503", code)
	}
	if _, m := get("/metrics"); !strings.Contains(m, "\nferry_receiver_disk_full 1\n") {
		t.Fatal("/metrics on a full disk: no ferry_receiver_disk_full 1")
	}
	// Reads are served: a page of rows.
	if code, body := get("/v1/tables/stock/rows?limit=10"); code != http.StatusOK || rows && !strings.Contains(body, `"key"`) {
		t.Fatalf("reading rows on a full disk: %d %s", code, body)
	}
	waitLog(t, rc.Process, "disk is full")
	// ferry status says so too.
	out, _ := exec.Command(bins.Ferry, "status", "--receiver", "http://"+rc.http).CombinedOutput()
	if !strings.Contains(string(out), "receiver: DISK FULL, applying paused") {
		t.Fatalf("ferry status on a full disk:\n%s", out)
	}
}

// TestFaultReceiverDiskFull: the receiver's disk fills while it applies
// (a tmpfs mounted as its --data; root only). It used to close its HTTP
// listener, retry a Pebble flush for ever and ignore SIGTERM. It must say
// so (log, /v1/status, /readyz, a metric), keep serving reads, resume by
// itself once space returns, and stop on SIGTERM while the disk is full.
// Crash variants: restarted on the still-full disk, and kill -9 on it;
// space returns, nothing is lost or applied twice.
func TestFaultReceiverDiskFull(t *testing.T) {
	r := newRig(t, 1)
	rc := r.receiver("recv")
	must(t, os.MkdirAll(rc.data, 0o755))
	// Room for the store's headroom (two 64 MiB memtables and 4 MiB) and
	// a little more.
	if err := syscall.Mount("tmpfs", rc.data, "tmpfs", 0, "size=200m"); err != nil {
		t.Skipf("cannot mount a tmpfs for the receiver's data (%v): run as root to test its disk filling", err)
	}
	t.Cleanup(func() { syscall.Unmount(rc.data, syscall.MNT_DETACH) })
	sh := r.shipper("shop")
	startAll(t, sh, rc.Process)
	ctx := context.Background()
	fig := &figures{scenario: "receiver disk full", faults: map[string]int{}}
	write := func(seed uint64) func() faults.LegacyStats {
		return runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: size(3_000, 30_000), Rate: 10_000, Seed: seed})
	}
	caughtUp := func() {
		truth, err := check.FromDir(r.changes)
		must(t, err)
		fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
		fig.written = truth.Changes()
		fig.rep = verify(t, rc, truth)
	}
	write(1)()
	caughtUp()

	// The disk fills while the legacy writes; space returns.
	free := fillDisk(t, rc.data)
	done := write(2)
	waitDiskFull(t, rc, true)
	fig.faults["disk full while applying"]++
	done()
	free()
	caughtUp()

	// SIGTERM on a full disk: the receiver exits.
	free = fillDisk(t, rc.data)
	done = write(3)
	waitDiskFull(t, rc, true)
	start := time.Now()
	must(t, rc.Stop(2*time.Minute))
	if d := time.Since(start); d >= 2*time.Minute {
		t.Fatalf("the receiver ignored SIGTERM on a full disk for %v (killed)", d)
	}
	fig.faults["SIGTERM on a full disk"]++
	done()

	// Restarted on the still-full disk: it says so and serves; kill -9.
	must(t, rc.Start())
	waitDiskFull(t, rc, false)
	fig.faults["restart on a full disk"]++
	must(t, rc.Kill())
	fig.faults["kill -9 on a full disk"]++
	free()
	must(t, rc.Start())
	caughtUp()
	fig.log(t)
	if b, _ := os.ReadFile(rc.Log); strings.Contains(string(b), "panic:") {
		t.Fatalf("the receiver panicked (see %s)", rc.Log)
	}
	noCrash(t, rc.Process, true)
	noCrash(t, sh, false)
}
