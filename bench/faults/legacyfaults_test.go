package faults_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/check"
	"github.com/ferrysync/ferry/bench/faults"
	"github.com/ferrysync/ferry/format"
)

// writeHeaderOnly writes segment seg of source as a writer killed right
// after creating it leaves it: its header and nothing else, or (torn) only
// the first half of the header — killed while writing it.
func writeHeaderOnly(t *testing.T, dir, source string, seg uint64, torn bool) {
	t.Helper()
	hdr, err := format.AppendHeader(nil, format.SegmentHeader{Source: source, Segment: seg, Created: time.Now().UnixNano()})
	must(t, err)
	if torn {
		hdr = hdr[:len(hdr)/2]
	}
	must(t, os.WriteFile(filepath.Join(dir, format.SegmentName(source, seg)), hdr, 0o644))
}

// TestFaultLegacyCrashImages runs the crash images SPEC.md describes on the
// legacy side, which used to stop the source for good: a first segment
// holding only its header and a second abandoned while its header was
// written (a fresh receiver must still see the chain start), a segment
// abandoned while its header was written in the middle of the chain, and —
// where a small tmpfs can be mounted — the legacy's disk filling up: the
// writer fails (a torn frame, a segment whose header could not be
// written), space returns, a new writer goes on, and everything committed
// to the files arrives.
func TestFaultLegacyCrashImages(t *testing.T) {
	r := newRig(t, 1)
	diskFull := syscall.Mount("tmpfs", r.changes, "tmpfs", 0, "size=48m") == nil
	if diskFull {
		t.Cleanup(func() { syscall.Unmount(r.changes, syscall.MNT_DETACH) })
	} else {
		t.Log("no tmpfs mount (not root?): the full-disk part is skipped")
	}
	fig := &figures{scenario: "legacy crash images", faults: map[string]int{}}
	ctx := context.Background()
	legacy := func(seed uint64, n int) faults.LegacyStats {
		st, err := faults.Legacy{Dir: r.changes, Source: "shop", Changes: n, Rate: 20_000, Seed: seed}.Run(ctx)
		must(t, err)
		return st
	}
	// Chain start: segment 1 only a header, segment 2 a torn header.
	writeHeaderOnly(t, r.changes, "shop", 1, false)
	writeHeaderOnly(t, r.changes, "shop", 2, true)
	fig.faults["header-only first segment"]++
	fig.faults["torn header at the chain start"]++
	sh := r.shipper("shop")
	rc := r.receiver("recv")
	startAll(t, sh, rc.Process)
	legacy(1, size(3_000, 20_000)) // segment 3, sealed: next 4
	// The middle: segment 4 abandoned while its header was written.
	segs, err := format.ListSegments(r.changes, "shop")
	must(t, err)
	writeHeaderOnly(t, r.changes, "shop", segs[len(segs)-1].Segment+1, true)
	fig.faults["torn header in the middle"]++
	legacy(2, size(3_000, 20_000))

	if diskFull {
		filler := filepath.Join(r.changes, "filler")
		f, err := os.Create(filler)
		must(t, err)
		_, err = faults.Legacy{Dir: r.changes, Source: "shop", Rate: 20_000, Seed: 3, Sync: format.SyncInterval}.Run(fillWhile(ctx, f))
		f.Close()
		if err == nil || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("the legacy writer on a full disk: %v, want ENOSPC", err)
		}
		fig.faults["disk full while writing"]++
		// Still full: a writer cannot create its segment, and leaves none.
		before, _ := format.ListSegments(r.changes, "shop")
		if _, err := (faults.Legacy{Dir: r.changes, Source: "shop", Changes: 10, Seed: 4}).Run(ctx); err == nil {
			t.Fatal("a writer started on a full disk")
		}
		after, _ := format.ListSegments(r.changes, "shop")
		if len(after) != len(before) {
			t.Fatalf("a writer that failed on a full disk left a segment behind: %d segments, was %d", len(after), len(before))
		}
		fig.faults["disk full at segment creation"]++
		must(t, os.Remove(filler)) // space returns
		legacy(5, size(3_000, 20_000))
	}
	truth, err := check.FromDir(r.changes)
	must(t, err)
	fig.written = truth.Changes()
	fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	noCrash(t, sh, true)
	noCrash(t, rc.Process, true)
}

// fillWhile returns a context that is cancelled once f has filled the disk
// it is on, written meanwhile in the background: the legacy writer runs
// until its writes fail for want of space.
func fillWhile(ctx context.Context, f *os.File) context.Context {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	go func() {
		defer func() {
			// Leave the writer a moment to hit the full disk, then stop it
			// if it has not failed by itself.
			time.Sleep(2 * time.Second)
			cancel()
		}()
		buf := make([]byte, 64<<10)
		for _, n := range []int{64 << 10, 4096, 512, 1} {
			for {
				time.Sleep(time.Millisecond)
				if _, err := f.Write(buf[:n]); err != nil {
					break
				}
			}
		}
	}()
	return ctx
}

// TestFaultHostileFiles: files a careless or hostile operator leaves in a
// segment directory stop their source loudly and at once, naming the file
// — they used to hang the shipper silently or make it clobber a file — and
// another source keeps flowing: a corrupt length field in the middle of
// the newest segment (it waited for a later segment that never came), a
// FIFO named like the next segment (open(2) blocked forever), and a
// symbolic link where the shipper keeps its instance file (written
// through, truncating its target).
func TestFaultHostileFiles(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	// bad: a corrupt length field in its only (live) segment.
	_, err := faults.Legacy{Dir: r.changes, Source: "bad", TablePrefix: "bad_", Changes: size(2_000, 20_000), Seed: 7}.Run(ctx)
	must(t, err)
	badPath := filepath.Join(r.changes, format.SegmentName("bad", 1))
	off := corruptLength(t, badPath)
	// odd: its own directory, a FIFO named like its next segment.
	oddDir := filepath.Join(r.root, "odd")
	_, err = faults.Legacy{Dir: oddDir, Source: "odd", TablePrefix: "odd_", Changes: 500, Seed: 8}.Run(ctx)
	must(t, err)
	segs, err := format.ListSegments(oddDir, "odd")
	must(t, err)
	// The segment the closed writer's seal names, as a FIFO.
	fifo := filepath.Join(oddDir, format.SegmentName("odd", segs[len(segs)-1].Segment+1))
	must(t, syscall.Mkfifo(fifo, 0o644))
	// link: a symbolic link where its instance file belongs.
	precious := filepath.Join(r.root, "precious")
	must(t, os.WriteFile(precious, []byte("keep me\n"), 0o644))
	must(t, os.Symlink(precious, filepath.Join(r.changes, "link.ship-instance")))

	bad, good, link := r.shipper("bad"), r.shipper("good"), r.shipper("link")
	odd := &faults.Process{Name: "ship-odd", Bin: bins.Ferry, Log: filepath.Join(r.root, "ship-odd.log"), Restart: 500 * time.Millisecond,
		Args: []string{"ship", "--dir", oddDir, "--source", "odd", "--nats", r.urls(), "--stream", streamName, "--lease-ttl", "3s"}}
	t.Cleanup(func() { odd.Kill() })
	rc := r.receiver("recv")
	startAll(t, bad, good, link, odd, rc.Process)
	st := runLegacy(t, ctx, faults.Legacy{Dir: r.changes, Source: "good", TablePrefix: "good_", Changes: size(5_000, 50_000), Rate: 10_000, Seed: 9})()
	for _, c := range []struct {
		p     *faults.Process
		names []string
	}{
		{bad, []string{badPath, fmt.Sprintf("offset %d", off), "valid frame starts"}},
		{odd, []string{fifo, "FIFO"}},
		{link, []string{"link.ship-instance", "symbolic link"}},
	} {
		waitLog(t, c.p, c.names...)
	}
	if b, _ := os.ReadFile(precious); string(b) != "keep me\n" {
		t.Fatalf("the instance file's link target holds %q", b)
	}
	truth, err := check.FromDir(r.changes)
	must(t, err)
	fig := &figures{scenario: "hostile files", written: st.Changes, faults: map[string]int{"corrupt length field": 1, "FIFO segment": 1, "linked state file": 1}}
	fig.catchUp = waitCaughtUp(t, rc, truth, 5*time.Minute)
	if err := truth.Sources["bad"].Stopped; err == nil {
		t.Fatalf("the checker found no corruption in %s", badPath)
	}
	fig.rep = verify(t, rc, truth)
	fig.log(t)
	noCrash(t, good, false)
	noCrash(t, rc.Process, true)
}

// corruptLength makes the length field of the middle frame of the segment
// at path claim ~1 MiB more than it has, with valid frames after it, and
// returns the frame's offset.
func corruptLength(t *testing.T, path string) int64 {
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
	mid := offs[len(offs)/2]
	binary.LittleEndian.PutUint32(b[mid:], binary.LittleEndian.Uint32(b[mid:])+1<<20)
	// Drop the seal: the segment is the newest and still open.
	b = b[:offs[len(offs)-1]]
	must(t, os.WriteFile(path, b, 0o644))
	return int64(mid)
}

// waitLog waits until p's log holds every one of names.
func waitLog(t *testing.T, p *faults.Process, names ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		log, _ := os.ReadFile(p.Log)
		ok := true
		for _, n := range names {
			ok = ok && bytes.Contains(log, []byte(n))
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never named %q in its log:\n%s", p.Name, names, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
