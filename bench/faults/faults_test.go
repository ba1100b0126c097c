package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/faults"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// figures are what every scenario logs (and the report quotes).
type figures struct {
	scenario string
	written  int
	faults   map[string]int
	catchUp  time.Duration
	rep      *check.Report
}

func (f *figures) log(t *testing.T) {
	t.Helper()
	var kinds []string
	total := 0
	for k, n := range f.faults {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
		total += n
	}
	t.Logf("FIGURES %s: changes written %d, faults injected %d (%s), lost %d, duplicated %d, unexpected %d, rows %d, catch-up %v",
		f.scenario, f.written, total, strings.Join(kinds, " "), f.rep.Lost, f.rep.Duplicated, f.rep.Unexpected, f.rep.Rows, f.catchUp.Round(time.Millisecond))
}

// runLegacy runs an in-process legacy writer and returns a function that
// waits for it.
func runLegacy(t *testing.T, ctx context.Context, l faults.Legacy) func() faults.LegacyStats {
	t.Helper()
	var st faults.LegacyStats
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		st, err = l.Run(ctx)
	}()
	t.Cleanup(func() { <-done })
	return func() faults.LegacyStats {
		<-done
		if err != nil {
			t.Fatalf("legacy writer: %v", err)
		}
		return st
	}
}

// startAll starts processes, failing the test on error.
func startAll(t *testing.T, ps ...*faults.Process) {
	t.Helper()
	for _, p := range ps {
		must(t, p.Start())
	}
}

// noCrash fails the test if p's runs ended by themselves (it should run
// until killed). Shippers are exempt (strict false): after a kill -9 a
// restart is refused until the dead one's lease expires, and their
// supervisor restarts them, as systemd would; their exits are logged.
func noCrash(t *testing.T, p *faults.Process, strict bool) {
	t.Helper()
	n, err := p.Exits()
	switch {
	case n == 0:
	case strict:
		t.Errorf("%s: %d runs ended by themselves, the last: %v (see %s)", p.Name, n, err, p.Log)
	default:
		t.Logf("%s: %d runs ended by themselves and were restarted, the last: %v", p.Name, n, err)
	}
}

// TestFaultKill9 kills the shipper, the receiver and the nats-server with
// SIGKILL at random moments while the legacy writes, restarting each, and
// checks that every change arrives exactly once.
func TestFaultKill9(t *testing.T) {
	r := newRig(t, 1)
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: size(20_000, 250_000), Rate: size(5_000, 10_000), Seed: 1})

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill schedule seed %d", seed)
	fig := &figures{scenario: "kill -9", faults: map[string]int{}}
	legacyDone := make(chan faults.LegacyStats, 1)
	go func() { legacyDone <- wait() }()
	var st faults.LegacyStats
	var order []int
loop:
	for {
		select {
		case st = <-legacyDone:
			break loop
		case <-time.After(time.Duration(200+rng.IntN(1300)) * time.Millisecond):
		}
		// Every round of three kills hits each process once, in a random
		// order, at random moments.
		if len(order) == 0 {
			order = rng.Perm(3)
		}
		v := order[0]
		order = order[1:]
		switch v {
		case 0:
			noCrash(t, sh, false)
			must(t, sh.Kill())
			fig.faults["shipper"]++
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
			must(t, sh.Start())
		case 1:
			noCrash(t, rc.Process, true)
			must(t, rc.Kill())
			fig.faults["receiver"]++
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
			must(t, rc.Start())
		case 2:
			must(t, r.nats[0].Kill())
			fig.faults["nats-server"]++
			time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
			must(t, r.nats[0].Start(ctx))
		}
	}
	fig.written = st.Changes
	truth, err := check.FromDir(r.changes)
	must(t, err)
	if truth.Changes() != st.Changes {
		t.Fatalf("files hold %d changes, the writer committed %d", truth.Changes(), st.Changes)
	}
	fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	noCrash(t, rc.Process, true)
	if full() && fig.written < 200_000 {
		t.Errorf("full run wrote %d changes, want at least 200,000", fig.written)
	}
}

// TestFaultClusterLeader runs a 3-node cluster with an R3 stream and kills
// the stream's leader repeatedly, restarting it each time.
func TestFaultClusterLeader(t *testing.T) {
	r := newRig(t, 3)
	r.createStream(3)
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: size(15_000, 150_000), Rate: size(3_000, 5_000), Seed: 2})
	nc, js := r.js()
	defer nc.Close()
	fig := &figures{scenario: "cluster leader loss", faults: map[string]int{}}
	legacyDone := make(chan faults.LegacyStats, 1)
	go func() { legacyDone <- wait() }()
	var st faults.LegacyStats
loop:
	for {
		select {
		case st = <-legacyDone:
			break loop
		case <-time.After(1500 * time.Millisecond):
		}
		leader := streamLeader(ctx, js)
		var victim *faults.NATSServer
		for _, s := range r.nats {
			if s.Name == leader {
				victim = s
			}
		}
		if victim == nil {
			t.Logf("no stream leader right now (%q); waiting", leader)
			continue
		}
		must(t, victim.Kill())
		fig.faults["leader "+victim.Name]++
		time.Sleep(time.Second)
		must(t, victim.Start(ctx))
	}
	fig.written = st.Changes
	truth, err := check.FromDir(r.changes)
	must(t, err)
	fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	if len(fig.faults) == 0 {
		t.Errorf("no leader was killed")
	}
}

func streamLeader(ctx context.Context, js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// TestFaultNATSOutage stops NATS while the legacy keeps writing: the writer
// must not slow down (the files are the buffer) and the shipper must catch up
// once NATS is back.
func TestFaultNATSOutage(t *testing.T) {
	r := newRig(t, 1)
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rate, n := size(5_000, 10_000), size(25_000, 300_000)
	start := time.Now()
	wait := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: n, Rate: rate, Seed: 3})
	time.Sleep(time.Second)
	must(t, r.nats[0].Kill())
	down := time.Now()
	st := wait()
	elapsed := time.Since(start)
	outage := time.Since(down)
	// The writer's pace while NATS was down: the legacy never waits.
	if want := 2 * time.Duration(float64(n)/float64(rate)*float64(time.Second)); elapsed > want {
		t.Errorf("the legacy took %v to write %d changes at %d/s (want ≤ %v): it waited on the outage", elapsed, n, rate, want)
	}
	restart := time.Now()
	must(t, r.nats[0].Start(ctx))
	truth, err := check.FromDir(r.changes)
	must(t, err)
	catchUp := waitCaughtUp(t, rc, truth, 5*time.Minute)
	fig := &figures{scenario: "NATS outage", written: st.Changes, faults: map[string]int{"outage": 1}, catchUp: catchUp}
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	t.Logf("outage %v while the legacy wrote; catch-up measured from the restart at %v", outage.Round(time.Millisecond), restart.Format(time.TimeOnly))
	noCrash(t, sh, false)
	noCrash(t, rc.Process, true)
}

// legacyProcess runs the legacy writer as a process of its own (this test
// binary re-executed), so that it can be killed with SIGKILL.
func legacyProcess(t *testing.T, r *rig, name string, l faults.Legacy) *exec.Cmd {
	t.Helper()
	cfg, err := json.Marshal(l)
	must(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), legacyEnv+"="+string(cfg))
	logf, err := os.OpenFile(filepath.Join(r.root, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	return cmd
}

// TestFaultTornTail kills the writer process mid-run and leaves a torn
// frame at the end of its segment, then restarts it: every committed
// transaction arrives, the torn one never does. Crashes alternate between
// two ways of tearing the last frame: appending the first half of one more
// frame (the shipper runs throughout), and truncating the segment inside
// its last whole frame (with the shipper killed before the writer started,
// so that frame was never shipped; truncating a shipped frame would rewrite
// history, which no crash does).
func TestFaultTornTail(t *testing.T) {
	r := newRig(t, 1)
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	crashes := size(2, 6)
	fig := &figures{scenario: "torn tail", faults: map[string]int{}}
	for i := 0; i < crashes; i++ {
		truncate := i%2 == 1
		if truncate {
			must(t, sh.Kill())
			fig.faults["shipper kill -9"]++
		}
		before, err := format.ListSegments(r.changes, "shop")
		must(t, err)
		w := legacyProcess(t, r, "legacy", faults.Legacy{Dir: r.changes, Source: "shop", Rate: 5_000, Seed: uint64(10 + i)})
		time.Sleep(time.Duration(700+rand.IntN(800)) * time.Millisecond)
		// On a loaded machine the writer may not have written anything
		// yet: the frame to tear must be its own, never one shipped before.
		waitNewFrame(t, r.changes, "shop", before)
		must(t, w.Process.Kill())
		w.Wait()
		fig.faults["writer kill -9"]++
		segs, err := format.ListSegments(r.changes, "shop")
		must(t, err)
		last := segs[len(segs)-1]
		if truncate {
			truncateLastFrame(t, r, last)
			fig.faults["truncated frame"]++
			must(t, sh.Start())
		} else {
			tornTail(t, last.Path, i)
			fig.faults["appended half frame"]++
		}
	}
	// A last writer that finishes cleanly.
	w := legacyProcess(t, r, "legacy", faults.Legacy{Dir: r.changes, Source: "shop", Changes: size(5_000, 50_000), Rate: 10_000, Seed: 99})
	must(t, w.Wait())
	truth, err := check.FromDir(r.changes)
	must(t, err)
	fig.written = truth.Changes()
	if got := len(truth.Sources["shop"].Torn); got != crashes {
		t.Fatalf("the files hold %d torn tails, want %d: %v", got, crashes, truth.Sources["shop"].Torn)
	}
	fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Scanning table "torn" too: the appended torn frames wrote only there.
	// A truncated frame's changes would show as unexpected feed entries.
	rep, err := check.Compare(ctx, truth, rc.client(), check.Options{ExtraTables: []string{"torn"}})
	must(t, err)
	must(t, rep.Err())
	fig.rep = rep
	fig.log(t)
}

// waitNewFrame waits until source has a segment newer than every one of
// before holding at least one whole frame (a writer started after before
// was listed has committed something).
func waitNewFrame(t *testing.T, dir, source string, before []format.SegmentFile) {
	t.Helper()
	var newest uint64
	if len(before) > 0 {
		newest = before[len(before)-1].Segment
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		segs, err := format.ListSegments(dir, source)
		must(t, err)
		if n := len(segs); n > 0 && segs[n-1].Segment > newest {
			if b, err := os.ReadFile(segs[n-1].Path); err == nil {
				if h, err := format.ParseHeader(b); err == nil {
					if fl := format.FrameLen(b[h.Len:]); fl > 0 && h.Len+fl <= len(b) {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no writer committed a frame to a new segment of %s in %s", source, dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// truncateLastFrame cuts the segment inside its last whole frame, after
// checking in the stream that this frame was never shipped.
func truncateLastFrame(t *testing.T, r *rig, seg format.SegmentFile) {
	t.Helper()
	b, err := os.ReadFile(seg.Path)
	must(t, err)
	h, err := format.ParseHeader(b)
	must(t, err)
	lastOff, lastLen := -1, 0
	for off := h.Len; off < len(b); {
		n := format.FrameLen(b[off:])
		if n < 0 || off+n > len(b) {
			break
		}
		lastOff, lastLen = off, n
		off += n
	}
	if lastOff < 0 {
		t.Fatalf("%s holds no frame to tear", seg.Path)
	}
	nc, js := r.js()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	must(t, err)
	if m, err := s.GetLastMsgForSubject(ctx, "ferry.shop"); err == nil {
		shipped, err := wire.ParseHeader(m.Header)
		must(t, err)
		if shipped.Segment > seg.Segment || shipped.Segment == seg.Segment && shipped.To > int64(lastOff) {
			t.Fatalf("test setup: the frame at %s offset %d was shipped already (stream at %d:%d)", seg.Path, lastOff, shipped.Segment, shipped.To)
		}
	}
	must(t, os.Truncate(seg.Path, int64(lastOff+lastLen/2)))
}

// tornTail appends to path the first half of a transaction frame writing to
// table "torn": what a writer killed in the middle of its write leaves.
func tornTail(t *testing.T, path string, i int) {
	t.Helper()
	frame, err := format.AppendTx(nil, &format.Tx{CommitTime: time.Now().UnixNano(), Changes: []format.Change{
		{Table: "torn", Op: format.OpInsert, Key: []byte(fmt.Sprint("torn-", i)), After: bytes.Repeat([]byte("x"), 300)},
	}})
	must(t, err)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	defer f.Close()
	_, err = f.Write(frame[:len(frame)/2])
	must(t, err)
}

// TestFaultCorruption flips a byte in the middle of one source's segment:
// that source stops with an error naming the file and offset, nothing after
// the corrupt frame is applied, and the other source keeps flowing.
func TestFaultCorruption(t *testing.T) {
	r := newRig(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The bad source's files, written before its shipper starts.
	badSt, err := faults.Legacy{Dir: r.changes, Source: "bad", TablePrefix: "bad_", Changes: size(5_000, 50_000), Seed: 4, MaxSegmentSize: int64(size(1<<20, 4<<20))}.Run(ctx)
	must(t, err)
	path := filepath.Join(r.changes, format.SegmentName("bad", 1))
	off := corruptMiddle(t, path)
	bad, good := r.shipper("bad"), r.shipper("good")
	rc := r.receiver("recv")
	startAll(t, bad, good, rc.Process)
	st := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "good", TablePrefix: "good_", Changes: size(10_000, 100_000), Rate: 10_000, Seed: 5})()
	truth, err := check.FromDir(r.changes)
	must(t, err)
	if truth.Sources["bad"].Stopped == nil {
		t.Fatalf("the checker found no corruption in %s", path)
	}
	catchUp := waitCaughtUp(t, rc, truth, 5*time.Minute)
	// The shipper must say which file and offset.
	deadline := time.Now().Add(30 * time.Second)
	for {
		log, _ := os.ReadFile(bad.Log)
		if bytes.Contains(log, []byte(path)) && bytes.Contains(log, []byte(fmt.Sprint(off))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shipper of bad never named %s and offset %d in its log:\n%s", path, off, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Give the stopped source time to (wrongly) move on before checking.
	time.Sleep(time.Second)
	fig := &figures{scenario: "corruption", written: badSt.Changes + st.Changes, faults: map[string]int{"flipped byte": 1}, catchUp: catchUp}
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	t.Logf("bad stopped at %v; %d changes of bad before the corrupt frame applied, good: %d changes", truth.Sources["bad"].Stopped, truth.Sources["bad"].Changes, truth.Sources["good"].Changes)
	noCrash(t, good, false)
	noCrash(t, rc.Process, true)

	// ferry status shows the stopped source loudly and the other caught up.
	out, err := exec.Command(bins.Ferry, "status", "--dir", r.changes, "--nats", r.urls(), "--receiver", "http://"+rc.http, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("ferry status: %v\n%s", err, out)
	}
	var status struct {
		Sources []struct {
			Source string
			OnDisk struct {
				Error string
			} `json:"on_disk"`
			ShipLag struct {
				Records int64
				Error   string
			} `json:"ship_lag"`
			ApplyLag struct {
				Records int64
			} `json:"apply_lag"`
		}
	}
	must(t, json.Unmarshal(out, &status))
	for _, s := range status.Sources {
		switch s.Source {
		case "bad":
			// The corrupt frame is in the last segment (on-disk error) or
			// in an earlier one (the shipped stage is stuck before it).
			if e := s.OnDisk.Error + s.ShipLag.Error; !strings.Contains(e, fmt.Sprintf("offset %d", off)) || !strings.Contains(e, path) {
				t.Errorf("ferry status: bad's errors %q do not name %s offset %d", e, path, off)
			}
		case "good":
			if s.ShipLag.Records != 0 || s.ApplyLag.Records != 0 {
				t.Errorf("ferry status: good behind by %d records shipped, %d applied; want 0", s.ShipLag.Records, s.ApplyLag.Records)
			}
		}
	}
	if len(status.Sources) != 2 {
		t.Errorf("ferry status shows %d sources, want bad and good:\n%s", len(status.Sources), out)
	}
}

// corruptMiddle flips one byte in the payload of the middle frame of the
// segment at path and returns that frame's offset.
func corruptMiddle(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	h, err := format.ParseHeader(b)
	must(t, err)
	var offs []int
	for off := h.Len; off < len(b); {
		n := format.FrameLen(b[off:])
		if n < 0 || off+n > len(b) {
			break
		}
		offs = append(offs, off)
		off += n
	}
	if len(offs) < 10 {
		t.Fatalf("%s holds %d frames, want at least 10", path, len(offs))
	}
	at := offs[len(offs)/2]
	b[at+format.FrameHeaderLen+3] ^= 0x55
	must(t, os.WriteFile(path, b, 0o644))
	return int64(at)
}

// TestFaultSlowReceiver throttles a receiver (SIGSTOP/SIGCONT, running 5 %
// of the time) while the legacy writes, so that it falls behind, then lets
// it catch up; then starts a second receiver from nothing once everything is
// written (far behind: the whole stream to apply). Both must match exactly.
func TestFaultSlowReceiver(t *testing.T) {
	r := newRig(t, 1)
	sh := r.shipper("shop")
	slow := r.receiver("slow")
	startAll(t, sh, slow.Process)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: size(30_000, 300_000), Rate: size(10_000, 20_000), TxSize: 4, Seed: 6})
	var wg sync.WaitGroup
	throttle, stopThrottle := context.WithCancel(ctx)
	pauses := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for throttle.Err() == nil {
			if slow.Pause() == nil {
				pauses++
			}
			time.Sleep(380 * time.Millisecond)
			slow.Resume()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	st := wait()
	stopThrottle()
	wg.Wait()
	truth, err := check.FromDir(r.changes)
	must(t, err)
	// How far behind the throttling left it. On a loaded machine the
	// throttled receiver may not even listen yet: wait for its answer.
	var applied map[string]check.Applied
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		applied, err = slow.client().Status(sctx)
		scancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	behind := truth.Changes() - int(applied["shop"].Changes)
	fig := &figures{scenario: "slow receiver", written: st.Changes, faults: map[string]int{"pauses": pauses}}
	fig.catchUp = waitCaughtUp(t, slow, truth, 5*time.Minute)
	fig.rep = verify(t, slow, truth)
	fig.log(t)
	t.Logf("the throttled receiver was %d changes behind when the legacy stopped", behind)
	if behind == 0 {
		t.Logf("note: the throttled receiver kept up; the throttle did not slow it enough on this machine")
	}

	late := r.receiver("late")
	must(t, late.Start())
	fig = &figures{scenario: "receiver started far behind", written: st.Changes, faults: map[string]int{"late start": 1}}
	fig.catchUp = waitCaughtUp(t, late, truth, 5*time.Minute)
	fig.rep = verify(t, late, truth)
	fig.log(t)
	t.Logf("the late receiver started %d changes behind and applied them in %v (%.0f changes/s)", truth.Changes(), fig.catchUp.Round(time.Millisecond), float64(truth.Changes())/fig.catchUp.Seconds())
	noCrash(t, slow.Process, true)
	noCrash(t, late.Process, true)
}

// TestFaultStreamLoss wipes the nats-server's store while the legacy writes
// (a broker that acknowledged messages and lost them all, stream and lease
// bucket included: harsher than the power cut of guarantee 6 (README.md, "A broker's ack is not durability"), which loses
// the tail only). The shipper keeps running: it finds the stream gone,
// re-creates it and re-ships from the change files; the receiver, whose
// stream's sequences restart, skips what it had applied, by source position.
func TestFaultStreamLoss(t *testing.T) {
	r := newRig(t, 1)
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "shop", Changes: size(20_000, 200_000), Rate: size(5_000, 10_000), Seed: 8})
	fig := &figures{scenario: "stream lost", faults: map[string]int{}}
	for i := 0; i < size(1, 3); i++ {
		time.Sleep(1500 * time.Millisecond)
		must(t, r.nats[0].Kill())
		must(t, os.RemoveAll(filepath.Join(r.nats[0].Dir, "js")))
		fig.faults["store wiped"]++
		must(t, r.nats[0].Start(ctx))
	}
	st := wait()
	fig.written = st.Changes
	truth, err := check.FromDir(r.changes)
	must(t, err)
	fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	noCrash(t, rc.Process, true)
	noCrash(t, sh, true)
}
