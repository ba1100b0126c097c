package format_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
)

// segmentFrames reads one segment file whole and returns its header, its
// transactions with their offsets, its seal (if any) and the error that
// ended the read (io.EOF at a clean end).
type segmentFrames struct {
	path  string
	hdr   format.SegmentHeader
	txs   []format.Tx
	offs  []int64
	seal  *format.Seal
	beats int
	// outcomes lists the resolutions of the segment's outcome frames, in
	// order.
	outcomes []format.Resolution
	endErr   error
}

func readSegment(t *testing.T, path string) segmentFrames {
	t.Helper()
	rd, f, err := format.OpenReader(path, 0)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer f.Close()
	out := segmentFrames{path: path, hdr: rd.Header()}
	for {
		fr, err := rd.Next()
		if err != nil {
			out.endErr = err
			if s, ok := rd.Sealed(); ok {
				out.seal = &s
			}
			return out
		}
		switch fr.Type {
		case format.FrameTx:
			var tx format.Tx
			if err := format.DecodeTx(fr.Payload, &tx); err != nil {
				t.Fatalf("%s offset %d: %v", path, rd.Offset(), err)
			}
			// Copy: decoded slices alias the reader's buffer.
			for i := range tx.Changes {
				c := &tx.Changes[i]
				c.Key, c.After = bytes.Clone(c.Key), bytes.Clone(c.After)
				if c.Before != nil {
					c.Before = bytes.Clone(c.Before)
				}
			}
			out.txs = append(out.txs, tx)
			out.offs = append(out.offs, rd.Offset())
		case format.FrameHeartbeat:
			out.beats++
		case format.FrameOutcome:
			var o format.Outcome
			if err := format.DecodeOutcome(fr.Payload, &o); err != nil {
				t.Fatalf("%s offset %d: %v", path, rd.Offset(), err)
			}
			out.outcomes = append(out.outcomes, o.Resolutions...)
		}
	}
}

// checkChain reads every segment of source in dir, checks headers against
// names and that each sealed segment names the next, and returns all
// transactions in order with their positions.
func checkChain(t *testing.T, dir string) ([]format.Tx, []format.Position, []segmentFrames) {
	t.Helper()
	segs, err := format.ListSegments(dir, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var txs []format.Tx
	var pos []format.Position
	var all []segmentFrames
	for i, s := range segs {
		sf := readSegment(t, s.Path)
		if sf.hdr.Segment != s.Segment || sf.hdr.Source != "shop" {
			t.Fatalf("%s: header says %s/%d", s.Path, sf.hdr.Source, sf.hdr.Segment)
		}
		if sf.endErr != io.EOF {
			t.Fatalf("%s: %v", s.Path, sf.endErr)
		}
		if i < len(segs)-1 {
			if sf.seal == nil || sf.seal.Next != segs[i+1].Segment {
				t.Fatalf("%s: seal %+v, want one naming segment %d", s.Path, sf.seal, segs[i+1].Segment)
			}
		}
		if sf.seal != nil {
			var changes uint64
			for _, tx := range sf.txs {
				changes += uint64(len(tx.Changes))
			}
			if sf.seal.Transactions != uint64(len(sf.txs)) || sf.seal.Changes != changes {
				t.Fatalf("%s: seal counts %d txs %d changes, segment holds %d, %d", s.Path, sf.seal.Transactions, sf.seal.Changes, len(sf.txs), changes)
			}
		}
		for j := range sf.txs {
			txs = append(txs, sf.txs[j])
			pos = append(pos, format.Position{Segment: s.Segment, Offset: sf.offs[j]})
		}
		all = append(all, sf)
	}
	return txs, pos, all
}

func openWriter(t *testing.T, dir string, opts ...format.WriterOption) *format.Writer {
	t.Helper()
	w, err := format.OpenWriter(dir, "shop", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func commit(t *testing.T, w *format.Writer, tx *format.Tx) format.Position {
	t.Helper()
	p, err := w.Commit(tx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriterRotatesBySize(t *testing.T) {
	for _, pre := range []bool{false, true} {
		t.Run(fmt.Sprintf("Preallocate=%v", pre), func(t *testing.T) {
			dir := t.TempDir()
			w := openWriter(t, dir, format.WithSync(format.SyncNone, 0), format.WithMaxSegmentSize(4096), format.WithPreallocate(pre))
			var want []format.Position
			for i := 0; i < 200; i++ {
				want = append(want, commit(t, w, testTx(i)))
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// checkChain also finds a preallocated segment cut back at its
			// seal: zeros after a seal are data after it.
			txs, pos, segs := checkChain(t, dir)
			if len(segs) < 5 {
				t.Fatalf("%d segments of at most ~4 KiB for 200 transactions, want rotation", len(segs))
			}
			if len(txs) != 200 {
				t.Fatalf("read %d transactions, want 200", len(txs))
			}
			for i := range txs {
				if txs[i].ID != testTx(i).ID || pos[i] != want[i] {
					t.Fatalf("transaction %d: %s at %v, want %s at %v", i, txs[i].ID, pos[i], testTx(i).ID, want[i])
				}
			}
			for _, s := range segs {
				if s.seal == nil {
					t.Fatalf("segment %d not sealed after Close", s.hdr.Segment)
				}
			}
		})
	}
}

// TestWriterPreallocates: under SyncAlways (by default) or when asked, the
// open segment's space is reserved up to the size limit and reads as its
// frames, then a clean end; Close cuts it back to its frames and seal. A
// crashed writer's preallocated segment is read the same way.
func TestWriterPreallocates(t *testing.T) {
	const max = 1 << 20
	for _, c := range []struct {
		name string
		opts []format.WriterOption
		pre  bool
	}{
		{"SyncAlways", []format.WriterOption{format.WithSync(format.SyncAlways, 0)}, true},
		{"SyncAlwaysOff", []format.WriterOption{format.WithSync(format.SyncAlways, 0), format.WithPreallocate(false)}, false},
		{"SyncNone", []format.WriterOption{format.WithSync(format.SyncNone, 0)}, false},
		{"SyncNoneOn", []format.WriterOption{format.WithSync(format.SyncNone, 0), format.WithPreallocate(true)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w := openWriter(t, dir, append(c.opts, format.WithMaxSegmentSize(max))...)
			for i := 0; i < 20; i++ {
				commit(t, w, testTx(i))
			}
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, format.SegmentName("shop", 1))
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Size() == max; got != c.pre {
				t.Fatalf("open segment of %d bytes: preallocated %v, want %v", st.Size(), got, c.pre)
			}
			// What a crashed writer leaves: the open segment as it is now.
			crashDir := t.TempDir()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(crashDir, format.SegmentName("shop", 1)), b, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{dir, crashDir} {
				sf := readSegment(t, path)
				if d == crashDir {
					sf = readSegment(t, filepath.Join(crashDir, format.SegmentName("shop", 1)))
				}
				if sf.endErr != io.EOF || len(sf.txs) != 20 || sf.seal != nil {
					t.Fatalf("%s: %d transactions, seal %v, then %v; want 20, none, io.EOF", d, len(sf.txs), sf.seal, sf.endErr)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if txs, _, _ := checkChain(t, dir); len(txs) != 20 {
				t.Fatalf("%d transactions after Close, want 20", len(txs))
			}
			// The crashed writer's successor starts segment 2 and finds
			// every transaction of segment 1.
			w2 := openWriter(t, crashDir, c.opts...)
			if p := commit(t, w2, testTx(20)); p.Segment != 2 {
				t.Fatalf("restarted writer committed to segment %d, want 2", p.Segment)
			}
			if err := w2.Close(); err != nil {
				t.Fatal(err)
			}
			var v format.Verifier
			v.Chain = true
			if err := v.Verify([]string{crashDir}); err != nil {
				t.Fatal(err)
			}
			if v.Corrupt != 0 || v.Torn != 0 || v.Transactions != 21 {
				t.Fatalf("after the crash: corrupt %d, torn %d, %d transactions; want 0, 0, 21 (first problem: %v)", v.Corrupt, v.Torn, v.Transactions, v.First)
			}
		})
	}
}

func TestWriterRotatesByAge(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncNone, 0), format.WithMaxSegmentAge(20*time.Millisecond))
	p1 := commit(t, w, testTx(1))
	deadline := time.Now().Add(10 * time.Second)
	for w.Segment() == p1.Segment {
		if time.Now().After(deadline) {
			t.Fatal("no rotation 10 s after the max segment age of 20 ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p2 := commit(t, w, testTx(2))
	if p2.Segment != p1.Segment+1 {
		t.Fatalf("second commit in segment %d, want %d", p2.Segment, p1.Segment+1)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	txs, pos, _ := checkChain(t, dir)
	if len(txs) != 2 || pos[0] != p1 || pos[1] != p2 {
		t.Fatalf("positions %v, want %v %v", pos, p1, p2)
	}
}

func TestWriterRestartStartsNewSegment(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir)
	commit(t, w, testTx(1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Segment 2 as a crashed writer left it: unsealed, torn last frame.
	crashed, offs := buildSegment(t, 2, 3, false)
	crashed = crashed[:offs[2]+10]
	if err := os.WriteFile(filepath.Join(dir, format.SegmentName("shop", 2)), crashed, 0o644); err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	stats := map[string]os.FileInfo{}
	segs, _ := format.ListSegments(dir, "shop")
	for _, s := range segs {
		before[s.Path], _ = os.ReadFile(s.Path)
		stats[s.Path], _ = os.Stat(s.Path)
	}
	w = openWriter(t, dir)
	if p := commit(t, w, testTx(2)); p.Segment != 3 {
		t.Fatalf("restarted writer committed to segment %d, want 3", p.Segment)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for path, b := range before {
		now, _ := os.ReadFile(path)
		st, _ := os.Stat(path)
		if !bytes.Equal(now, b) || !st.ModTime().Equal(stats[path].ModTime()) {
			t.Fatalf("restarted writer touched %s", path)
		}
	}
}

func TestWriterConcurrentCommits(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncNone, 0), format.WithMaxSegmentSize(64<<10))
	const writers, each = 8, 1000
	got := make([][]format.Position, writers)
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				tx := &format.Tx{CommitTime: int64(i), ID: fmt.Sprintf("%d/%d", g, i), Changes: []format.Change{
					{Table: "t", Op: format.OpInsert, Key: []byte(strconv.Itoa(i)), After: bytes.Repeat([]byte{'x'}, 100+g)},
				}}
				p, err := w.Commit(tx)
				if err != nil {
					t.Error(err)
					return
				}
				got[g] = append(got[g], p)
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	txs, pos, segs := checkChain(t, dir)
	if len(segs) < 2 {
		t.Fatalf("%d segments, want rotation under concurrent commits", len(segs))
	}
	if len(txs) != writers*each {
		t.Fatalf("read %d transactions, want %d", len(txs), writers*each)
	}
	at := map[format.Position]string{}
	for i, tx := range txs {
		at[pos[i]] = tx.ID
		var g, n int
		fmt.Sscanf(tx.ID, "%d/%d", &g, &n)
		if c := tx.Changes[0]; len(c.After) != 100+g || string(c.Key) != strconv.Itoa(n) {
			t.Fatalf("transaction %s read back with key %q and a %d-byte image", tx.ID, c.Key, len(c.After))
		}
	}
	for g := range got {
		for i, p := range got[g] {
			if id := at[p]; id != fmt.Sprintf("%d/%d", g, i) {
				t.Fatalf("Commit of %d/%d returned %v, which holds %q", g, i, p, id)
			}
			if i > 0 && !got[g][i-1].Less(p) {
				t.Fatalf("writer %d: position %v after %v", g, p, got[g][i-1])
			}
		}
	}
}

func TestWriterSyncPolicies(t *testing.T) {
	for _, policy := range []format.SyncPolicy{format.SyncNone, format.SyncInterval, format.SyncAlways} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			w := openWriter(t, dir, format.WithSync(policy, 5*time.Millisecond))
			defer w.Close()
			path := filepath.Join(dir, format.SegmentName("shop", 1))
			for i := 0; i < 20; i++ {
				p := commit(t, w, testTx(i))
				frame, _ := format.AppendTx(nil, testTx(i))
				end := p.Offset + int64(len(frame))
				inFile := func() bool {
					b, _ := os.ReadFile(path)
					return int64(len(b)) >= end && bytes.Equal(b[p.Offset:end], frame)
				}
				if policy == format.SyncAlways {
					// Commit returned: the frame is in the file (and fsynced).
					if !inFile() {
						t.Fatalf("SyncAlways: frame %d not in the file when Commit returned", i)
					}
					continue
				}
				// Otherwise the flusher writes it soon after.
				deadline := time.Now().Add(5 * time.Second)
				for !inFile() {
					if time.Now().After(deadline) {
						t.Fatalf("%v: frame %d not in the file 5 s after Commit", policy, i)
					}
					time.Sleep(time.Millisecond)
				}
			}
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := format.ParseSyncPolicy("sometimes"); err == nil {
		t.Fatal("ParseSyncPolicy accepted an unknown policy")
	}
}

func TestWriterCloseSeals(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir)
	for i := 0; i < 3; i++ {
		commit(t, w, testTx(i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sf := readSegment(t, filepath.Join(dir, format.SegmentName("shop", 1)))
	if sf.seal == nil || sf.seal.Next != 2 || sf.seal.Transactions != 3 || sf.seal.Changes != 6 || sf.endErr != io.EOF {
		t.Fatalf("after Close: seal %+v, end %v; want next 2, 3 txs, 6 changes", sf.seal, sf.endErr)
	}
	if _, err := w.Commit(testTx(9)); !errors.Is(err, format.ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	if err := w.Close(); !errors.Is(err, format.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
}

func TestWriterHeartbeat(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncNone, 0), format.WithHeartbeat(10*time.Millisecond))
	commit(t, w, testTx(1))
	path := filepath.Join(dir, format.SegmentName("shop", 1))
	deadline := time.Now().Add(10 * time.Second)
	for readSegment(t, path).beats == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat frame 10 s into an idle writer with a 10 ms heartbeat")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWriterSecondWriterRefused(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir)
	if _, err := format.OpenWriter(dir, "shop"); !errors.Is(err, format.ErrLocked) {
		t.Fatalf("second writer: %v, want ErrLocked", err)
	}
	other, err := format.OpenWriter(dir, "billing")
	if err != nil {
		t.Fatalf("writer of another source in the same directory: %v", err)
	}
	other.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2, err := format.OpenWriter(dir, "shop")
	if err != nil {
		t.Fatalf("writer after the first closed: %v", err)
	}
	w2.Close()
}

func TestWriterRefusesInvalidTxWhole(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncAlways, 0))
	p1 := commit(t, w, testTx(1))
	cases := []struct {
		name string
		tx   format.Tx
		want error
	}{
		{"NoChanges", format.Tx{}, format.ErrInvalid},
		{"EmptyKeyInSecondChange", format.Tx{Changes: []format.Change{
			{Table: "a", Op: format.OpInsert, Key: []byte("1")},
			{Table: "a", Op: format.OpInsert},
		}}, format.ErrInvalid},
		{"BadOp", format.Tx{Changes: []format.Change{{Table: "a", Op: 9, Key: []byte("1")}}}, format.ErrInvalid},
		{"BadContent", format.Tx{Changes: []format.Change{{Table: "a", Op: format.OpInsert, Content: 7, Key: []byte("1")}}}, format.ErrInvalid},
		{"KeyTooLarge", format.Tx{Changes: []format.Change{{Table: "a", Op: format.OpInsert, Key: make([]byte, format.MaxKeyLen+1)}}}, format.ErrTooLarge},
		{"IDTooLarge", format.Tx{ID: string(make([]byte, format.MaxIDLen+1)), Changes: []format.Change{{Table: "a", Op: format.OpInsert, Key: []byte("1")}}}, format.ErrTooLarge},
	}
	for _, c := range cases {
		if _, err := w.Commit(&c.tx); !errors.Is(err, c.want) {
			t.Fatalf("%s: Commit = %v, want %v", c.name, err, c.want)
		}
	}
	p2 := commit(t, w, testTx(2))
	frame, _ := format.AppendTx(nil, testTx(1))
	if p2.Offset != p1.Offset+int64(len(frame)) {
		t.Fatalf("valid commit after refused ones at %v, want right after the first at %d", p2, p1.Offset+int64(len(frame)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if txs, _, _ := checkChain(t, dir); len(txs) != 2 {
		t.Fatalf("%d transactions in the file, want 2", len(txs))
	}
}

func TestWriterOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	bad := map[string]format.WriterOption{
		"SyncPolicy":  format.WithSync(format.SyncPolicy(7), 0),
		"SyncNegInt":  format.WithSync(format.SyncInterval, -1),
		"SegmentSize": format.WithMaxSegmentSize(10),
		"SegmentAge":  format.WithMaxSegmentAge(-time.Second),
		"Heartbeat":   format.WithHeartbeat(-time.Second),
		"MaxPending":  format.WithMaxPending(1),
	}
	for name, opt := range bad {
		if w, err := format.OpenWriter(dir, "shop", opt); err == nil {
			w.Close()
			t.Errorf("%s: OpenWriter accepted an invalid option", name)
		}
	}
	if _, err := format.OpenWriter(dir, "bad/source"); !errors.Is(err, format.ErrInvalid) {
		t.Errorf("OpenWriter with source %q: %v, want ErrInvalid", "bad/source", err)
	}
}

func TestWriterRotateAndSyncAlways(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithSync(format.SyncAlways, 0), format.WithMaxSegmentSize(4096))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				p, err := w.Commit(testTx(g*1000 + i))
				if err != nil {
					t.Error(err)
					return
				}
				// SyncAlways: the frame is in its segment file on return.
				b, _ := os.ReadFile(filepath.Join(dir, format.SegmentName("shop", p.Segment)))
				if _, _, err := format.ParseFrame(b[min(int(p.Offset), len(b)):]); err != nil {
					t.Errorf("frame at %v not in the file when Commit returned: %v", p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	seg := w.Segment()
	if _, err := os.Stat(filepath.Join(dir, format.SegmentName("shop", seg))); err != nil {
		t.Fatalf("segment %d does not exist when Rotate returns: %v", seg, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	txs, _, segs := checkChain(t, dir)
	if len(txs) != 200 || len(segs) < 4 {
		t.Fatalf("%d transactions in %d segments, want 200 in many", len(txs), len(segs))
	}
}

// TestWriterLockSeenByOtherProcesses checks that another process sees the
// source locked with either kind of lock a writer in another language may
// take (SPEC.md, "Lock file"). The other process is this test binary again.
func TestWriterLockSeenByOtherProcesses(t *testing.T) {
	if path := os.Getenv("FERRY_LOCK_PROBE"); path != "" {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(3)
		}
		ferr := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		rerr := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_WRLCK})
		fmt.Printf("flock=%v fcntl=%v\n", ferr == nil, rerr == nil)
		os.Exit(0)
	}
	dir := t.TempDir()
	probe := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriterLockSeenByOtherProcesses$")
		cmd.Env = append(os.Environ(), "FERRY_LOCK_PROBE="+filepath.Join(dir, "shop.lock"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("probe process: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	w := openWriter(t, dir)
	if got, want := probe(), "flock=false fcntl=false"; got != want {
		t.Fatalf("another process while the writer runs: %s, want %s", got, want)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := probe(), "flock=true fcntl=true"; got != want {
		t.Fatalf("another process after Close: %s, want %s", got, want)
	}
}

// Retention may delete or archive every shipped segment of a source: a
// writer opening the emptied directory must go on from the last segment it
// created, never restart the chain at 1 (receivers would skip the new
// segments as already applied).
func TestWriterContinuesChainAfterSegmentsRemoved(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, format.WithMaxSegmentSize(4096))
	for i := 0; i < 200; i++ {
		commit(t, w, testTx(i))
	}
	last := w.Segment()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if last < 2 {
		t.Fatalf("wanted several segments, got %d", last)
	}
	segs, _ := format.ListSegments(dir, "shop")
	for _, s := range segs {
		if err := os.Remove(s.Path); err != nil {
			t.Fatal(err)
		}
	}
	w = openWriter(t, dir)
	if got, want := commit(t, w, testTx(1)).Segment, last+1; got != want {
		t.Fatalf("writer on an emptied directory committed to segment %d, want %d", got, want)
	}
	w.Close()

	// A lock file that does not hold a number is refused, not guessed at.
	if err := os.WriteFile(filepath.Join(dir, "shop.lock"), []byte("twelve"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := format.OpenWriter(dir, "shop"); !errors.Is(err, format.ErrCorrupt) || !strings.Contains(err.Error(), "shop.lock") {
		t.Fatalf("OpenWriter with a garbled lock file: %v, want ErrCorrupt naming the file", err)
	}
}
