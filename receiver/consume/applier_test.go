package consume_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver/consume"
	"github.com/ferrysync/ferry/receiver/store"
	"github.com/ferrysync/ferry/receiver/wiretest"
)

// genTxs makes n transactions of per changes each, ~200-byte JSON rows,
// keys k<tx>-<i> in table t.
func genTxs(n, per int, tag string) []format.Tx {
	txs := make([]format.Tx, n)
	pad := strings.Repeat("x", 150)
	for i := range txs {
		txs[i].CommitTime = int64(1_700_000_000_000_000_000 + i)
		txs[i].ID = fmt.Sprintf("%s-%d", tag, i)
		for j := 0; j < per; j++ {
			txs[i].Changes = append(txs[i].Changes, format.Change{Table: "t", Op: format.OpUpsert,
				Key: []byte(fmt.Sprintf("%s%06d-%03d", tag, i, j)), After: []byte(fmt.Sprintf(`{"i":%d,"j":%d,"pad":%q}`, i, j, pad))})
		}
	}
	return txs
}

type harness struct {
	t   *testing.T
	st  *store.Store
	ap  *consume.Applier
	pub *wiretest.Publisher
	seq uint64
	m   *consume.Metrics
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	st, err := store.Open("", store.WithFS(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dec, err := wire.NewDecompressor()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	m, err := consume.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := consume.NewApplier(st, dec, m, nil, "ferry")
	t.Cleanup(ap.Close)
	return &harness{t: t, st: st, ap: ap, pub: &wiretest.Publisher{Prefix: "ferry", Codec: wire.CodecZstd}, m: m}
}

func (h *harness) msg(m wiretest.Msg) consume.Message {
	h.t.Helper()
	m.Batch.Codec = h.pub.Codec
	body, err := h.pub.Body(m)
	if err != nil {
		h.t.Fatal(err)
	}
	h.seq++
	return consume.Message{Subject: "ferry." + m.Batch.Source, Header: m.Batch.Header(), Body: body, StreamSeq: h.seq}
}

func (h *harness) handle(msgs ...wiretest.Msg) {
	h.t.Helper()
	for _, m := range msgs {
		if err := h.ap.Handle(h.msg(m)); err != nil {
			h.t.Fatalf("Handle(%s): %v", m.Batch.MsgID(), err)
		}
	}
	if err := h.ap.Commit(); err != nil {
		h.t.Fatalf("Commit: %v", err)
	}
}

// checkLog asserts the change log holds each change of txs exactly once,
// in order, and the rows their last values.
func (h *harness) checkLog(source string, txs []format.Tx) {
	h.t.Helper()
	cs, err := h.st.Changes(0, 1<<30)
	if err != nil {
		h.t.Fatal(err)
	}
	var want []string
	for _, tx := range txs {
		for _, c := range tx.Changes {
			want = append(want, string(c.Key))
		}
	}
	var got []string
	seen := map[string]bool{}
	for _, c := range cs {
		if c.Version.Source != source {
			continue
		}
		if seen[c.Version.String()] {
			h.t.Fatalf("change %s applied twice", c.Version)
		}
		seen[c.Version.String()] = true
		got = append(got, string(c.Key))
	}
	if len(got) != len(want) {
		h.t.Fatalf("source %s: %d changes in the log, want %d", source, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			h.t.Fatalf("source %s: change %d is %s, want %s", source, i, got[i], want[i])
		}
	}
	for _, tx := range txs {
		for _, c := range tx.Changes {
			row, ok, err := h.st.Get(c.Table, c.Key)
			if err != nil || !ok || string(row.Value) != string(c.After) {
				h.t.Fatalf("row %s: ok=%v err=%v value=%q, want %q", c.Key, ok, err, row.Value, c.After)
			}
		}
	}
}

func (h *harness) sourceErr(source string) *consume.SourceError {
	return h.ap.Status()[source].Err
}

func writeMsgs(t *testing.T, source string, txs []format.Tx, rotate, maxRaw int) []wiretest.Msg {
	dir := t.TempDir()
	wiretest.WriteSegments(t, dir, source, txs, rotate)
	return wiretest.Messages(t, dir, source, maxRaw)
}

func TestApplyInOrder(t *testing.T) {
	for _, codec := range []wire.Codec{wire.CodecZstd, wire.CodecS2, wire.CodecNone} {
		t.Run(codec.String(), func(t *testing.T) {
			h := newHarness(t)
			h.pub.Codec = codec
			txs := genTxs(200, 3, "a")
			msgs := writeMsgs(t, "a", txs, 70, 4096)
			if len(msgs) < 10 {
				t.Fatalf("only %d messages", len(msgs))
			}
			h.handle(msgs...)
			h.checkLog("a", txs)
			if e := h.sourceErr("a"); e != nil {
				t.Fatalf("source stopped: %v", e)
			}
			last := msgs[len(msgs)-1].Batch
			p := h.st.Position("a")
			if p.Segment != last.Segment || p.Offset != last.To {
				t.Fatalf("position %d:%d, want %d:%d", p.Segment, p.Offset, last.Segment, last.To)
			}
			if got, want := h.st.Cursor().Seq, h.seq; got != want {
				t.Fatalf("cursor %d, want %d", got, want)
			}
		})
	}
}

func TestSkipsRepublishedAndOverlapping(t *testing.T) {
	txs := genTxs(120, 2, "b")
	dir := t.TempDir()
	wiretest.WriteSegments(t, dir, "b", txs, 50)
	frames, err := wiretest.Frames(dir, "b")
	if err != nil {
		t.Fatal(err)
	}
	small := wiretest.Cut("b", frames, 2048)
	big := wiretest.Cut("b", frames, 16384) // same frames, different boundaries: overlaps
	tests := []struct {
		name string
		seq  func() [][]wiretest.Msg
	}{
		{"RepublishAll", func() [][]wiretest.Msg { return [][]wiretest.Msg{small, small} }},
		{"RepublishEachTwice", func() [][]wiretest.Msg {
			var out [][]wiretest.Msg
			for _, m := range small {
				out = append(out, []wiretest.Msg{m, m})
			}
			return out
		}},
		{"OverlapSmallThenBig", func() [][]wiretest.Msg { return [][]wiretest.Msg{small[:len(small)/2], big} }},
		{"OverlapBigThenSmall", func() [][]wiretest.Msg { return [][]wiretest.Msg{big[:len(big)/2], small} }},
		{"ReplayFromStartAfterEverything", func() [][]wiretest.Msg { return [][]wiretest.Msg{big, small[:5], big[:3]} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for _, group := range tc.seq() {
				h.handle(group...) // one commit per group
			}
			h.checkLog("b", txs)
			if e := h.sourceErr("b"); e != nil {
				t.Fatalf("source stopped: %v", e)
			}
		})
	}
}

func TestSplitFrame(t *testing.T) {
	txs := append(genTxs(3, 1, "c"), genTxs(1, 400, "d")...) // the last one ~80 KB
	txs = append(txs, genTxs(2, 1, "e")...)
	msgs := writeMsgs(t, "c", txs, 0, 8192)
	var parts []int
	for i, m := range msgs {
		if m.Batch.Parts > 1 {
			parts = append(parts, i)
		}
	}
	if len(parts) < 3 {
		t.Fatalf("want a frame split in several parts, got %d part messages", len(parts))
	}
	first, last := parts[0], parts[len(parts)-1]

	t.Run("Whole", func(t *testing.T) {
		h := newHarness(t)
		h.handle(msgs...)
		h.checkLog("c", txs)
	})
	t.Run("NotVisibleUntilLastPart", func(t *testing.T) {
		h := newHarness(t)
		h.handle(msgs[:last]...) // every part but the last
		if row, ok, _ := h.st.Get("t", txs[3].Changes[0].Key); ok {
			t.Fatalf("row of an incomplete split transaction visible: %+v", row)
		}
		if c := h.st.Cursor().Seq; c >= uint64(first+1) {
			t.Fatalf("cursor %d moved past the first part (seq %d): a restart would lose the parts", c, first+1)
		}
		h.handle(msgs[last:]...)
		h.checkLog("c", txs)
	})
	t.Run("Part0AgainRestarts", func(t *testing.T) {
		h := newHarness(t)
		h.handle(msgs[:first+2]...)
		h.handle(msgs[first:]...) // the shipper restarted the frame
		h.checkLog("c", txs)
	})
	t.Run("MissingPartStops", func(t *testing.T) {
		h := newHarness(t)
		h.handle(msgs[:first+1]...)
		h.handle(msgs[first+2:]...) // part 1 lost
		e := h.sourceErr("c")
		if e == nil || e.Kind != consume.KindGap {
			t.Fatalf("source error %v, want a gap", e)
		}
		if _, ok, _ := h.st.Get("t", txs[3].Changes[0].Key); ok {
			t.Fatal("split transaction applied without all its parts")
		}
		if _, ok, _ := h.st.Get("t", txs[4].Changes[0].Key); ok {
			t.Fatal("transaction after the gap applied")
		}
	})
}

func TestCorruptStopsOnlyItsSource(t *testing.T) {
	txsA, txsB := genTxs(60, 2, "a"), genTxs(60, 2, "b")
	ma, mb := writeMsgs(t, "a", txsA, 0, 2048), writeMsgs(t, "b", txsB, 0, 2048)
	h := newHarness(t)
	bad := ma[3]
	bad.Raw = append([]byte(nil), bad.Raw...)
	bad.Raw[len(bad.Raw)/2] ^= 0x40 // a flipped bit inside a frame: CRC mismatch
	h.handle(ma[:3]...)
	h.handle(bad)
	e := h.sourceErr("a")
	if e == nil || e.Kind != consume.KindCorrupt || !errors.Is(e, consume.ErrCorrupt) {
		t.Fatalf("source a error %v, want corrupt", e)
	}
	if e.Segment != bad.Batch.Segment || e.Offset < bad.Batch.From || e.Offset >= bad.Batch.To {
		t.Fatalf("error at %d:%d, want inside [%d, %d) of segment %d", e.Segment, e.Offset, bad.Batch.From, bad.Batch.To, bad.Batch.Segment)
	}
	if !strings.Contains(e.Error(), `source "a"`) || !strings.Contains(e.Error(), "stream sequence") {
		t.Fatalf("error does not say where: %v", e)
	}
	// Frames before the corrupt one in the same message are not applied either.
	if p := h.st.Position("a"); p.Offset != bad.Batch.From {
		t.Fatalf("position %d, want %d (the start of the corrupt message)", p.Offset, bad.Batch.From)
	}
	h.handle(ma[4:]...) // continues after the corrupt range: a gap, never applied
	h.handle(mb...)     // the other source keeps flowing
	h.checkLog("b", txsB)
	if p := h.st.Position("a"); p.Offset != bad.Batch.From {
		t.Fatalf("source a moved to %d after stopping at %d", p.Offset, bad.Batch.From)
	}
	if h.sourceErr("a").Kind != consume.KindCorrupt {
		t.Fatal("the first error must stay the reported one")
	}
	if c := h.st.Cursor().Seq; c >= uint64(4) {
		t.Fatalf("cursor %d moved past the corrupt message (seq 4): a restart would not retry it", c)
	}
	// The shipper re-ships from the stopped position: the source resumes.
	h.handle(ma[3:]...)
	if e := h.sourceErr("a"); e != nil {
		t.Fatalf("source still stopped after a good re-ship: %v", e)
	}
	h.checkLog("a", txsA)
}

func TestGaps(t *testing.T) {
	txs := genTxs(90, 2, "g")
	msgs := writeMsgs(t, "g", txs, 30, 1024)
	var segStarts []int
	for i, m := range msgs {
		if m.Batch.PrevEnd >= 0 {
			segStarts = append(segStarts, i)
		}
	}
	if len(segStarts) < 3 {
		t.Fatalf("want 3 segments, got %d", len(segStarts))
	}
	s2 := segStarts[1]
	tests := []struct {
		name string
		msgs func() []wiretest.Msg
		at   int // index of the message that must stop the source
	}{
		{"MissingMessage", func() []wiretest.Msg { return append(append([]wiretest.Msg{}, msgs[:2]...), msgs[3:]...) }, 2},
		{"MissingSegmentStart", func() []wiretest.Msg {
			return append(append([]wiretest.Msg{}, msgs[:s2]...), msgs[s2+1:]...)
		}, s2},
		{"WrongPrevEnd", func() []wiretest.Msg {
			out := append([]wiretest.Msg{}, msgs...)
			out[s2].Batch.PrevEnd -= 7
			return out
		}, s2},
		{"SegmentJump", func() []wiretest.Msg {
			return append(append([]wiretest.Msg{}, msgs[:s2]...), msgs[segStarts[2]:]...)
		}, s2},
		{"FreshSourceMidChain", func() []wiretest.Msg { return msgs[s2:] }, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			in := tc.msgs()
			h.handle(in...)
			e := h.sourceErr("g")
			if e == nil || e.Kind != consume.KindGap || !errors.Is(e, consume.ErrGap) {
				t.Fatalf("source error %v, want a gap", e)
			}
			if e.StreamSeq != uint64(tc.at+1) {
				t.Fatalf("stopped at stream sequence %d, want %d", e.StreamSeq, tc.at+1)
			}
			var wantPos store.SourcePosition
			if tc.at > 0 {
				wantPos.Segment, wantPos.Offset = in[tc.at-1].Batch.Segment, in[tc.at-1].Batch.To
			}
			if p := h.st.Position("g"); p.Segment != wantPos.Segment || p.Offset != wantPos.Offset {
				t.Fatalf("position %d:%d, want %d:%d: something after the gap was applied", p.Segment, p.Offset, wantPos.Segment, wantPos.Offset)
			}
		})
	}
}

// TestGapRescansOnce: with SetRescanOnGap (the consumer's setting) a gap
// asks once per applied position for the stream to be read again, applying
// nothing after it meanwhile; read again, a stream that holds the missing
// message continues the source, and one that still lacks it stops it.
func TestGapRescansOnce(t *testing.T) {
	txs := genTxs(40, 2, "r")
	msgs := writeMsgs(t, "r", txs, 0, 512)
	if len(msgs) < 6 {
		t.Fatalf("want 6 messages at least, got %d", len(msgs))
	}
	holed := append(append([]wiretest.Msg{}, msgs[:2]...), msgs[3:]...)
	for _, c := range []struct {
		name  string
		again []wiretest.Msg // the stream read the second time
	}{
		{"RefilledContinues", msgs},
		{"StillMissingStops", holed},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.ap.SetRescanOnGap(true)
			h.handle(holed...)
			e := h.ap.RescanWanted()
			if e == nil || e.Kind != consume.KindGap || e.StreamSeq != 3 {
				t.Fatalf("rescan wanted %v, want the gap at stream sequence 3", e)
			}
			if se := h.sourceErr("r"); se != nil {
				t.Fatalf("source stopped (%v) instead of asking for a rescan", se)
			}
			if p := h.st.Position("r"); p.Segment != msgs[1].Batch.Segment || p.Offset != msgs[1].Batch.To {
				t.Fatalf("position %d:%d, want %d:%d: something after the gap was applied", p.Segment, p.Offset, msgs[1].Batch.Segment, msgs[1].Batch.To)
			}
			h.ap.Reset(store.StreamCursor{})
			if h.ap.RescanWanted() != nil {
				t.Fatal("rescan still wanted after Reset")
			}
			h.seq = 0
			h.handle(c.again...)
			if c.name == "RefilledContinues" {
				if e := h.sourceErr("r"); e != nil || h.ap.RescanWanted() != nil {
					t.Fatalf("source error %v, rescan %v after reading the refilled stream", e, h.ap.RescanWanted())
				}
				h.checkLog("r", txs)
				return
			}
			if e := h.sourceErr("r"); e == nil || e.Kind != consume.KindGap || h.ap.RescanWanted() != nil {
				t.Fatalf("source error %v, rescan %v; want the gap met again to stop the source", e, h.ap.RescanWanted())
			}
		})
	}
}

func TestStartMidChain(t *testing.T) {
	txs := genTxs(40, 1, "m")
	msgs := writeMsgs(t, "m", txs, 0, 512)
	h := newHarness(t)
	h.ap.SetStartMidChain(true)
	h.handle(msgs[3:]...)
	if e := h.sourceErr("m"); e != nil {
		t.Fatalf("source stopped: %v", e)
	}
	if p := h.st.Position("m"); p.Offset != msgs[len(msgs)-1].Batch.To {
		t.Fatalf("position %+v", p)
	}
	h.handle(msgs[5:7]...) // still skipped by position afterwards
	if p := h.st.Position("m"); p.Changes != uint64(len(txs))-uint64(msgs[0].Batch.Changes+msgs[1].Batch.Changes+msgs[2].Batch.Changes) {
		t.Fatalf("applied %d changes", p.Changes)
	}
}

func TestBadHeadersStopTheSource(t *testing.T) {
	h := newHarness(t)
	msgs := writeMsgs(t, "h", genTxs(5, 1, "h"), 0, 1<<20)
	m := h.msg(msgs[0])
	m.Header["Ferry-Version"] = []string{"9"}
	if err := h.ap.Handle(m); err != nil {
		t.Fatal(err)
	}
	if e := h.sourceErr("h"); e == nil || e.Kind != consume.KindHeader {
		t.Fatalf("source error %v, want a header error", e)
	}
	// A message whose header source disagrees with its subject.
	h2 := newHarness(t)
	m = h2.msg(msgs[0])
	m.Subject = "ferry.other"
	h2.ap.Handle(m)
	if e := h2.sourceErr("other"); e == nil || e.Kind != consume.KindHeader {
		t.Fatalf("source error %v, want a header error", e)
	}
}

func TestCountsMustMatchHeaders(t *testing.T) {
	h := newHarness(t)
	msgs := writeMsgs(t, "n", genTxs(5, 2, "n"), 0, 1<<20)
	m := msgs[0]
	m.Batch.Changes++
	h.handle(m)
	if e := h.sourceErr("n"); e == nil || e.Kind != consume.KindCorrupt {
		t.Fatalf("source error %v, want corrupt (change count)", e)
	}
}

// synth builds a message of raw frames starting at from in segment seg.
func synth(t *testing.T, source string, seg uint64, from, prevEnd int64, raws ...[]byte) wiretest.Msg {
	t.Helper()
	m := wiretest.Msg{Batch: wire.Batch{Source: source, Segment: seg, From: from, Parts: 1, PrevEnd: prevEnd}}
	for _, r := range raws {
		f, _, err := format.ParseFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == format.FrameTx {
			var tx format.Tx
			if err := format.DecodeTx(f.Payload, &tx); err != nil {
				t.Fatal(err)
			}
			m.Batch.Changes += len(tx.Changes)
		}
		m.Batch.Frames++
		m.Raw = append(m.Raw, r...)
	}
	m.Batch.To = from + int64(len(m.Raw))
	m.Batch.RawLen = len(m.Raw)
	return m
}

func TestHeartbeatsAndSeals(t *testing.T) {
	txs := genTxs(3, 1, "x")
	var raws [][]byte
	for i := range txs {
		r, err := format.AppendTx(nil, &txs[i])
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, r)
	}
	hbTime := time.Now().Add(time.Hour).UnixNano()
	hb := format.AppendHeartbeat(nil, hbTime)
	seal := func(next uint64) []byte { return format.AppendSeal(nil, format.Seal{Next: next, Time: 1}) }
	const hdr = 38 // any frame offset works for the receiver

	t.Run("HeartbeatAdvances", func(t *testing.T) {
		h := newHarness(t)
		m := synth(t, "x", 1, hdr, 0, raws[0], hb)
		h.handle(m)
		p := h.st.Position("x")
		if p.Offset != m.Batch.To || p.AliveAt != hbTime || p.Changes != 1 {
			t.Fatalf("position %+v, want offset %d alive at %d", p, m.Batch.To, hbTime)
		}
	})
	t.Run("SealThenNextSegment", func(t *testing.T) {
		h := newHarness(t)
		m1 := synth(t, "x", 1, hdr, 0, raws[0], seal(2))
		m2 := synth(t, "x", 2, hdr, m1.Batch.To, raws[1])
		h.handle(m1, m2)
		if e := h.sourceErr("x"); e != nil {
			t.Fatal(e)
		}
		if p := h.st.Position("x"); p.Segment != 2 || p.Changes != 2 || p.Sealed {
			t.Fatalf("position %+v", p)
		}
	})
	tests := []struct {
		name string
		msgs func() []wiretest.Msg
	}{
		{"FrameAfterSealNextMessage", func() []wiretest.Msg {
			m1 := synth(t, "x", 1, hdr, 0, raws[0], seal(2))
			return []wiretest.Msg{m1, synth(t, "x", 1, m1.Batch.To, -1, raws[1])}
		}},
		{"FrameAfterSealSameMessage", func() []wiretest.Msg {
			return []wiretest.Msg{synth(t, "x", 1, hdr, 0, raws[0], seal(2), raws[1])}
		}},
		{"SealNamesWrongNext", func() []wiretest.Msg {
			return []wiretest.Msg{synth(t, "x", 1, hdr, 0, raws[0], seal(5))}
		}},
		// The frame rules are format.Walker's: a type neither of the
		// format nor optional (>= 128) is corruption.
		{"UnknownFrameType", func() []wiretest.Msg {
			return []wiretest.Msg{synth(t, "x", 1, hdr, 0, raws[0], format.AppendFrame(nil, format.FrameType(60), []byte("?")), raws[1])}
		}},
		{"ShortSealPayload", func() []wiretest.Msg {
			return []wiretest.Msg{synth(t, "x", 1, hdr, 0, raws[0], format.AppendFrame(nil, format.FrameSeal, []byte("short")), raws[1])}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for _, m := range tc.msgs() {
				h.handle(m)
			}
			if e := h.sourceErr("x"); e == nil || e.Kind != consume.KindCorrupt {
				t.Fatalf("source error %v, want corrupt", e)
			}
			if p := h.st.Position("x"); p.Changes > 1 {
				t.Fatalf("applied %d changes past the seal", p.Changes)
			}
		})
	}
}

// Torn bytes reported on a segment's first message count once, however often
// that message is read again (restarts, re-ships, overlapping ranges).
func TestTornBytesCountedOnce(t *testing.T) {
	h := newHarness(t)
	txs := genTxs(60, 2, "t")
	msgs := writeMsgs(t, "t", txs, 20, 4096)
	var opens []int
	for i := range msgs {
		if msgs[i].Batch.PrevEnd > 0 {
			msgs[i].Batch.Torn = 7
			opens = append(opens, i)
		}
	}
	if len(opens) < 2 {
		t.Fatalf("want messages opening several segments, got %d", len(opens))
	}
	h.handle(msgs...)
	h.handle(msgs...)                        // republished whole
	h.handle(msgs[opens[0]], msgs[opens[1]]) // and one by one
	h.checkLog("t", txs)
	if got, want := h.ap.Status()["t"].TornBytes, int64(7*len(opens)); got != want {
		t.Fatalf("torn bytes %d, want %d (7 per segment opened)", got, want)
	}
}

// TestFramelessSegmentsSkipped: a segment that held no frame (empty, or
// abandoned while its header was written) produces no message; the next
// segment's Ferry-Prev-Segment names the last segment with frames and
// Prev-End where it ended. The receiver continues from exactly there and
// nowhere else.
func TestFramelessSegmentsSkipped(t *testing.T) {
	txs := genTxs(4, 1, "e")
	var raws [][]byte
	for i := range txs {
		r, err := format.AppendTx(nil, &txs[i])
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, r)
	}
	hdr := int64(format.HeaderLen(format.Version, "e"))
	first := synth(t, "e", 1, hdr, 0, raws[0], raws[1])
	for _, c := range []struct {
		name    string
		prevSeg uint64
		prevEnd int64
		gap     bool
	}{
		{"Continues", 1, first.Batch.To, false},
		{"WrongPrevEnd", 1, first.Batch.To - 1, true},
		{"WrongPrevSegment", 2, first.Batch.To, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			next := synth(t, "e", 4, hdr, c.prevEnd, raws[2], raws[3])
			next.Batch.PrevSegment = c.prevSeg
			h.handle(first, next)
			e := h.sourceErr("e")
			if c.gap {
				if e == nil || e.Kind != consume.KindGap {
					t.Fatalf("source error %v, want a gap", e)
				}
				return
			}
			if e != nil {
				t.Fatalf("source stopped: %v", e)
			}
			h.checkLog("e", txs)
		})
	}
}
