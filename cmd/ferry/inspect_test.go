package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// writeSegments writes n single-change transactions for source shop into
// dir with ferry write and returns the offsets of their frames, read back
// with ferry inspect --json.
func writeSegments(t *testing.T, dir string, n int, extra ...string) []outputLine {
	t.Helper()
	var in strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, `{"table":"orders","op":"upsert","key":"%d","after":{"n":%d,"pad":"%s"}}`+"\n", i, i, strings.Repeat("p", 100))
	}
	args := append([]string{"write", "--dir", dir, "--source", "shop"}, extra...)
	if _, stderr, code := runFerry(t, strings.NewReader(in.String()), args...); code != 0 {
		t.Fatalf("ferry write: exit %d: %s", code, stderr)
	}
	out, stderr, code := runFerry(t, nil, "inspect", "--json", dir)
	if code != 0 {
		t.Fatalf("ferry inspect: exit %d: %s", code, stderr)
	}
	return decodeOutput(t, out)
}

func segPath(dir string, seg uint64) string {
	return filepath.Join(dir, format.SegmentName("shop", seg))
}

func TestInspectTornTail(t *testing.T) {
	dir := t.TempDir()
	got := writeSegments(t, dir, 10)
	last := got[9].Position.Offset
	path := segPath(dir, 1)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Drop the seal and cut the last transaction in the middle.
	if err := os.WriteFile(path, data[:last+30], 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runFerry(t, nil, "inspect", "--verify", dir)
	if code != inspectExitTorn {
		t.Fatalf("exit %d, want %d (torn tail); stdout %s stderr %s", code, inspectExitTorn, out, stderr)
	}
	want := fmt.Sprintf("%s: offset %d:", path, last)
	if !strings.Contains(stderr, "torn tail") || !strings.Contains(stderr, want) {
		t.Fatalf("stderr %q, want a torn tail at %q", stderr, want)
	}
	if !strings.Contains(out, "TORN") || !strings.Contains(out, "after 9 transactions") {
		t.Fatalf("verify report %q, want TORN after 9 transactions", out)
	}
	// Flags after the path mean the same (they were taken as paths).
	if out2, _, code2 := runFerry(t, nil, "inspect", dir, "--verify"); code2 != inspectExitTorn || out2 != out {
		t.Fatalf("inspect DIR --verify: exit %d, stdout %q; want exit %d and the report of inspect --verify DIR", code2, out2, inspectExitTorn)
	}
	// After "--" a path that looks like a flag is a path.
	if _, stderr, code2 := runFerry(t, nil, "inspect", "--verify", "--", "--json"); code2 != 1 || !strings.Contains(stderr, "--json") {
		t.Fatalf("inspect --verify -- --json: exit %d, stderr %q; want 1 naming the missing path --json", code2, stderr)
	}
	// The dump still shows the 9 whole transactions.
	out, _, code = runFerry(t, nil, "inspect", "--json", dir)
	if n := len(decodeOutput(t, out)); code != inspectExitTorn || n != 9 {
		t.Fatalf("--json: %d changes, exit %d; want 9 and %d", n, code, inspectExitTorn)
	}
}

func TestInspectCorruptMiddleFrame(t *testing.T) {
	dir := t.TempDir()
	got := writeSegments(t, dir, 10)
	mid := got[4].Position.Offset
	path := segPath(dir, 1)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int64{mid + 2, mid + 5, mid + 8, mid + 40} { // length, crc, type, payload
		bad := append([]byte(nil), data...)
		bad[at] ^= 0x10
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := runFerry(t, nil, "inspect", "--verify", dir)
		if code != inspectExitCorrupt {
			t.Fatalf("byte %d flipped: exit %d, want %d; stdout %s stderr %s", at, code, inspectExitCorrupt, out, stderr)
		}
		want := fmt.Sprintf("%s: offset %d:", path, mid)
		if !strings.Contains(stderr, want) || !strings.Contains(out, "CORRUPT") {
			t.Fatalf("byte %d flipped: stderr %q, stdout %q; want corruption at %q", at, stderr, out, want)
		}
	}
}

func TestInspectChain(t *testing.T) {
	t.Run("RotatedChainOK", func(t *testing.T) {
		dir := t.TempDir()
		writeSegments(t, dir, 200, "--max-segment-size", "4KiB")
		out, stderr, code := runFerry(t, nil, "inspect", "--verify", dir)
		if code != 0 || !strings.Contains(out, "200 transactions, 200 changes: ok") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
		}
	})
	t.Run("Gap", func(t *testing.T) {
		dir := t.TempDir()
		writeSegments(t, dir, 200, "--max-segment-size", "4KiB")
		if err := os.Remove(segPath(dir, 3)); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := runFerry(t, nil, "inspect", "--verify", dir)
		if code != inspectExitCorrupt || !strings.Contains(stderr, "segment 2 is followed by segment 4") {
			t.Fatalf("exit %d, stderr %q; want %d naming the gap", code, stderr, inspectExitCorrupt)
		}
	})
	t.Run("HeaderDoesNotMatchName", func(t *testing.T) {
		dir := t.TempDir()
		writeSegments(t, dir, 3)
		if err := os.Rename(segPath(dir, 1), segPath(dir, 5)); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := runFerry(t, nil, "inspect", "--verify", dir)
		if code != inspectExitCorrupt || !strings.Contains(stderr, "does not match the file name") {
			t.Fatalf("exit %d, stderr %q; want %d naming the mismatch", code, stderr, inspectExitCorrupt)
		}
	})
	t.Run("AbandonedSegment", func(t *testing.T) {
		dir := t.TempDir()
		writeSegments(t, dir, 3)
		// A crashed writer's segment 1: no seal. Then a new writer's segment 2.
		data, _ := os.ReadFile(segPath(dir, 1))
		if err := os.WriteFile(segPath(dir, 1), data[:len(data)-format.FrameHeaderLen-32], 0o644); err != nil {
			t.Fatal(err)
		}
		writeSegments(t, dir, 2)
		out, stderr, code := runFerry(t, nil, "inspect", "--verify", dir)
		if code != 0 || !strings.Contains(out, "abandoned") || !strings.Contains(out, "5 transactions") {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 0 reporting an abandoned segment", code, out, stderr)
		}
	})
	t.Run("NotASegment", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "notes.txt")
		os.WriteFile(path, []byte("hello, this is not a change file"), 0o644)
		_, stderr, code := runFerry(t, nil, "inspect", path)
		if code != inspectExitCorrupt || !strings.Contains(stderr, "bad magic") {
			t.Fatalf("exit %d, stderr %q; want %d and bad magic", code, stderr, inspectExitCorrupt)
		}
	})
	t.Run("Usage", func(t *testing.T) {
		if _, _, code := runFerry(t, nil, "inspect"); code != 2 {
			t.Fatalf("no path: exit %d, want 2", code)
		}
		if _, stderr, code := runFerry(t, nil, "inspect", filepath.Join(t.TempDir(), "missing")); code != 1 || stderr == "" {
			t.Fatalf("missing path: exit %d, want 1", code)
		}
	})
}

func TestInspectHumanDump(t *testing.T) {
	dir := t.TempDir()
	in := `{"table":"orders","op":"upsert","key":"42","after":{"total":9.5},"before":{"total":1},"tx":"t1","origin":"svc"}` + "\n"
	if _, stderr, code := runFerry(t, strings.NewReader(in), "write", "--dir", dir, "--source", "shop"); code != 0 {
		t.Fatal(stderr)
	}
	out, stderr, code := runFerry(t, nil, "inspect", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"source shop  segment 1", `id "t1"`, `origin "svc"`, `upsert orders key "42" after {"total":9.5} before {"total":1}`, "seal      next segment 2", "sealed, next segment 2"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dump lacks %q:\n%s", want, out)
		}
	}
}

func TestInspectGoldenVectors(t *testing.T) {
	// The format's golden vectors, through the command: exit status by case.
	want := map[string]int{
		"minimal": 0, "full": 0, "unsealed": 0,
		"torn-tail": inspectExitTorn, "torn-header": inspectExitTorn, "zero-tail": inspectExitTorn,
		"mid-checksum": inspectExitCorrupt, "mid-bad-length": inspectExitCorrupt, "unknown-frame-type": inspectExitCorrupt,
		"data-after-seal": inspectExitCorrupt, "bad-magic": inspectExitCorrupt, "newer-version": inspectExitCorrupt,
		"header-checksum": inspectExitCorrupt,
	}
	for name, code := range want {
		path := filepath.Join("..", "..", "format", "testdata", name+".ferry")
		if _, stderr, got := runFerry(t, nil, "inspect", "--verify", path); got != code {
			t.Errorf("%s: exit %d, want %d (%s)", name, got, code, stderr)
		}
	}
}

func TestInspectJSONNonJSONContent(t *testing.T) {
	out, stderr, code := runFerry(t, nil, "inspect", "--json", filepath.Join("..", "..", "format", "testdata", "full.ferry"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want one per change (6):\n%s", len(lines), out)
	}
	for i, want := range map[int]string{
		0: `"after":{"name":"Zoë","tier":"gold"},"content":"json","tx":"T-1001"`,
		3: `"key":"2026/0002","before":null,"content":"json"`, // an empty JSON before image
		4: `"key_base64":"AP8Q","after":"3q2+7w==","content":"binary","origin":"svc-orders"`,
		5: `"content":"text"`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %s\nlacks %s", i, lines[i], want)
		}
	}
}

// TestInspectRefusesFIFO: a FIFO named like a segment, given as a directory
// or as a path, is refused at once with an error naming it (inspect used to
// block in open(2), deaf to SIGTERM).
func TestInspectRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := segPath(dir, 1)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{dir, fifo} {
		done := make(chan struct{})
		var stderr string
		var code int
		go func() {
			defer close(done)
			_, stderr, code = runFerry(t, nil, "inspect", "--verify", arg)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("inspect --verify %s blocked", arg)
		}
		if code != 1 || !strings.Contains(stderr, fifo) || !strings.Contains(stderr, "FIFO") {
			t.Fatalf("inspect --verify %s: exit %d, stderr %q; want exit 1 naming the FIFO", arg, code, stderr)
		}
	}
}
