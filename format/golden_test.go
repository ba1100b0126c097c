package format_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ferrysync/ferry/format"
)

var update = flag.Bool("update", false, "rewrite the golden vectors in testdata/ from the code")

// A golden vector is a segment file in testdata/ (<name>.ferry), its
// expected decoding (<name>.json) and an annotated hex dump (<name>.hex).
// Other implementations of SPEC.md check themselves against them; this test
// checks that the Go code still writes and reads them the same way.
type golden struct {
	name  string
	build func(t *testing.T) []byte
	// valid vectors are what a conforming writer produces; the Go encoder
	// must still produce them byte for byte.
	valid bool
}

const goldenTime = 1_767_225_600_000_000_000 // 2026-01-01T00:00:00Z

// goldenHeader is a version 1 header: the vectors from before version 2
// stay byte for byte what they were, so that readers keep reading them.
func goldenHeader(t *testing.T, source string, seg uint64) []byte {
	b, err := format.AppendHeader(nil, format.SegmentHeader{Version: 1, Source: source, Segment: seg, Created: goldenTime})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenHeaderV2 is a version 2 header with a low watermark.
func goldenHeaderV2(t *testing.T, source string, seg uint64, lw format.Position) []byte {
	b, err := format.AppendHeader(nil, format.SegmentHeader{Version: 2, Source: source, Segment: seg, Created: goldenTime, LowWatermark: lw})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writebackSegment shows a write-back's endings: a command carried out (a
// prepared transaction with origin and command id, then its outcome), a
// command refused (a rejection frame), and the first command delivered
// again and found carried out (an applied frame).
func writebackSegment(t *testing.T) []byte {
	b := goldenHeaderV2(t, "shop", 1, format.Position{})
	first := len(b)
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 1, ID: "pg:8100", Origin: "svc-orders", Command: "cmd-7f3a", Prepared: true,
		Changes: []format.Change{{Table: "orders", Op: format.OpInsert, Key: []byte("o-10"), After: []byte(`{"sku":"sku-1","qty":1}`), Version: 1}}})
	var err error
	if b, err = format.AppendOutcome(b, format.Outcome{Time: goldenTime + 2, Resolutions: []format.Resolution{
		{Prepared: format.Position{Segment: 1, Offset: int64(first)}, Decision: format.DecisionCommitted}}}); err != nil {
		t.Fatal(err)
	}
	if b, err = format.AppendRejection(b, format.Rejection{Time: goldenTime + 3, Command: "cmd-7f3b", Origin: "svc-orders",
		Reason: "stale version: stock sku-1 is at version 302, the command read 301"}); err != nil {
		t.Fatal(err)
	}
	if b, err = format.AppendApplied(b, format.Applied{Time: goldenTime + 4, Command: "cmd-7f3a", Origin: "svc-orders", TxID: "pg:8100", Version: 1}); err != nil {
		t.Fatal(err)
	}
	return b
}

// orderSegment uses every feature of format version 2 once: a low watermark
// naming a prepared transaction of the previous segment, a prepared
// transaction with row versions, a committed one (the after-commit path),
// an outcome committing one prepared transaction and aborting another.
func orderSegment(t *testing.T) []byte {
	b := goldenHeaderV2(t, "shop", 3, format.Position{Segment: 2, Offset: 160})
	first := len(b)
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 1, ID: "pg:7301", Prepared: true, Changes: []format.Change{
		{Table: "stock", Op: format.OpUpdate, Key: []byte("sku-1"), After: []byte(`{"qty":41}`), Version: 300},
		{Table: "orders", Op: format.OpInsert, Key: []byte("o-9"), After: []byte(`{"sku":"sku-1"}`), Version: 1},
	}})
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 2, ID: "pg:7302", Changes: []format.Change{
		{Table: "stock", Op: format.OpUpdate, Key: []byte("sku-2"), After: []byte(`{"qty":7}`), Before: []byte(`{"qty":8}`), Version: 128},
	}})
	second := len(b)
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 3, ID: "pg:7303", Prepared: true, Changes: []format.Change{
		{Table: "stock", Op: format.OpDelete, Key: []byte("sku-3"), Version: 12},
	}})
	var err error
	b, err = format.AppendOutcome(b, format.Outcome{Time: goldenTime + 4, Resolutions: []format.Resolution{
		{Prepared: format.Position{Segment: 2, Offset: 160}, Decision: format.DecisionCommitted},
		{Prepared: format.Position{Segment: 3, Offset: int64(first)}, Decision: format.DecisionCommitted},
		{Prepared: format.Position{Segment: 3, Offset: int64(second)}, Decision: format.DecisionAborted},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return format.AppendSeal(b, format.Seal{Next: 4, Transactions: 3, Changes: 4, Time: goldenTime + 5})
}

func appendTx(t *testing.T, b []byte, tx *format.Tx) []byte {
	b, err := format.AppendTx(b, tx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// minimalSegment is the worked example of SPEC.md.
func minimalSegment(t *testing.T) []byte {
	b := goldenHeader(t, "shop", 1)
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 1_000_000, ID: "t1", Changes: []format.Change{
		{Table: "orders", Op: format.OpUpsert, Key: []byte("42"), After: []byte(`{"total":9.5}`)},
	}})
	return format.AppendSeal(b, format.Seal{Next: 2, Transactions: 1, Changes: 1, Time: goldenTime + 2_000_000})
}

// fullSegment uses every feature of the format once.
func fullSegment(t *testing.T) []byte {
	b := goldenHeader(t, "billing-eu_2", 7)
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 1, ID: "T-1001", Changes: []format.Change{
		{Table: "customers", Op: format.OpInsert, Key: []byte("c-17"), After: []byte(`{"name":"Zoë","tier":"gold"}`)},
		{Table: "customers", Op: format.OpUpdate, Key: []byte("c-18"), After: []byte(`{"tier":"silver"}`), Before: []byte(`{"tier":"bronze"}`)},
		{Table: "invoices", Op: format.OpDelete, Key: []byte("2026/0001"), Before: []byte(`{"amount":12}`)},
		{Table: "invoices", Op: format.OpDelete, Key: []byte("2026/0002"), Before: []byte{}},
	}})
	b = format.AppendHeartbeat(b, goldenTime+2)
	b = format.AppendFrame(b, format.FrameType(200), []byte("optional frame a reader skips"))
	b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + 3, Origin: "svc-orders", Changes: []format.Change{
		{Table: "blobs", Op: format.OpUpsert, Key: []byte{0x00, 0xff, 0x10}, After: []byte{0xde, 0xad, 0xbe, 0xef}, Content: format.ContentBinary},
		{Table: "notes", Op: format.OpUpsert, Key: []byte("n1"), After: bytes.Repeat([]byte("long text "), 20), Content: format.ContentText},
	}})
	return format.AppendSeal(b, format.Seal{Next: 8, Transactions: 2, Changes: 6, Time: goldenTime + 4})
}

// unsealedSegment is a segment a writer is still writing (or crashed after
// its last whole frame): it ends cleanly without a seal.
func unsealedSegment(t *testing.T) []byte {
	b := goldenHeader(t, "shop", 2)
	for i := 0; i < 3; i++ {
		b = appendTx(t, b, &format.Tx{CommitTime: goldenTime + int64(i), Changes: []format.Change{
			{Table: "orders", Op: format.OpUpsert, Key: []byte(fmt.Sprint(100 + i)), After: []byte(fmt.Sprintf(`{"n":%d}`, i))},
		}})
	}
	return b
}

// frameStart returns the offset of frame i (0-based) of a segment.
func frameStart(t *testing.T, b []byte, i int) int {
	h, err := format.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	off := h.Len
	for ; i > 0; i-- {
		off += format.FrameLen(b[off:])
	}
	return off
}

func goldens() []golden {
	return []golden{
		{"minimal", minimalSegment, true},
		{"full", fullSegment, true},
		{"unsealed", unsealedSegment, true},
		{"order", orderSegment, true},
		{"writeback", writebackSegment, true},
		{"outcome-in-v1", func(t *testing.T) []byte {
			b := goldenHeader(t, "shop", 1)
			b, err := format.AppendOutcome(b, format.Outcome{Time: goldenTime, Resolutions: []format.Resolution{
				{Prepared: format.Position{Segment: 1, Offset: 41}, Decision: format.DecisionCommitted}}})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, false},
		{"torn-tail", func(t *testing.T) []byte {
			b := unsealedSegment(t)
			return b[:frameStart(t, b, 2)+12]
		}, false},
		{"torn-header", func(t *testing.T) []byte { return unsealedSegment(t)[:20] }, false},
		{"zero-tail", func(t *testing.T) []byte {
			b := unsealedSegment(t)
			last := frameStart(t, b, 2)
			return append(b[:last+5], make([]byte, 64)...)
		}, false},
		{"mid-checksum", func(t *testing.T) []byte {
			b := unsealedSegment(t)
			b[frameStart(t, b, 1)+20] ^= 0x01
			return b
		}, false},
		{"mid-bad-length", func(t *testing.T) []byte {
			b := unsealedSegment(t)
			b[frameStart(t, b, 1)+2] = 0x01 // length + 65536: past the end of the file
			return b
		}, false},
		{"unknown-frame-type", func(t *testing.T) []byte {
			b := goldenHeader(t, "shop", 1)
			return format.AppendFrame(b, format.FrameType(64), []byte{1, 2, 3})
		}, false},
		{"data-after-seal", func(t *testing.T) []byte {
			return format.AppendHeartbeat(minimalSegment(t), goldenTime+3)
		}, false},
		{"bad-magic", func(t *testing.T) []byte {
			b := minimalSegment(t)
			copy(b, "FERRYSEQ")
			return b
		}, false},
		{"newer-version", func(t *testing.T) []byte {
			b := minimalSegment(t)
			binary.LittleEndian.PutUint16(b[8:], 3)
			return b
		}, false},
		{"header-checksum", func(t *testing.T) []byte {
			b := minimalSegment(t)
			b[16] ^= 0x04 // segment number 1 -> 5
			return b
		}, false},
	}
}

// The expected decoding, language-neutral: byte strings are UTF-8 text when
// they are valid UTF-8 and their content allows it, hex otherwise.
type goldenFile struct {
	Header *goldenHeaderJSON `json:"header"`
	Frames []goldenFrame     `json:"frames"`
	// End says how reading stopped: "eof" (clean end), or the error:
	// "torn_tail", "checksum", "corrupt", "bad_magic", "version".
	End struct {
		Offset int64  `json:"offset"`
		Result string `json:"result"`
	} `json:"end"`
}

type goldenHeaderJSON struct {
	Version uint16 `json:"version"`
	Length  int    `json:"length"`
	Source  string `json:"source"`
	Segment uint64 `json:"segment"`
	Created int64  `json:"created_unix_nano"`
	// LowWatermark is "segment:offset", version 2 headers only.
	LowWatermark string `json:"low_watermark,omitempty"`
}

type goldenFrame struct {
	Offset    int64            `json:"offset"`
	Length    int              `json:"payload_length"`
	CRC       string           `json:"crc32c"`
	Type      int              `json:"type"`
	TypeName  string           `json:"type_name"`
	Tx        *goldenTx        `json:"tx,omitempty"`
	Seal      *goldenSeal      `json:"seal,omitempty"`
	Heartbeat *int64           `json:"heartbeat_unix_nano,omitempty"`
	Outcome   *goldenOutcome   `json:"outcome,omitempty"`
	Rejection *goldenRejection `json:"rejection,omitempty"`
	Applied   *goldenApplied   `json:"applied,omitempty"`
	Payload   string           `json:"payload_hex,omitempty"` // skippable frames
}

type goldenTx struct {
	CommitTime int64          `json:"commit_time_unix_nano"`
	ID         string         `json:"id"`
	Origin     string         `json:"origin"`
	Prepared   bool           `json:"prepared,omitempty"`
	Command    string         `json:"command,omitempty"`
	Changes    []goldenChange `json:"changes"`
}

type goldenRejection struct {
	Time    int64  `json:"time_unix_nano"`
	Command string `json:"command"`
	Origin  string `json:"origin"`
	Reason  string `json:"reason"`
}

type goldenApplied struct {
	Time    int64  `json:"time_unix_nano"`
	Command string `json:"command"`
	Origin  string `json:"origin"`
	TxID    string `json:"tx_id"`
	Version uint64 `json:"version"`
}

type goldenOutcome struct {
	Time        int64              `json:"time_unix_nano"`
	Resolutions []goldenResolution `json:"resolutions"`
}

type goldenResolution struct {
	Segment  uint64 `json:"segment"`
	Offset   int64  `json:"offset"`
	Decision string `json:"decision"`
}

type goldenChange struct {
	Table     string  `json:"table"`
	Op        string  `json:"op"`
	Content   string  `json:"content"`
	Key       *string `json:"key,omitempty"`
	KeyHex    *string `json:"key_hex,omitempty"`
	After     *string `json:"after,omitempty"`
	AfterHex  *string `json:"after_hex,omitempty"`
	Before    *string `json:"before,omitempty"`
	BeforeHex *string `json:"before_hex,omitempty"`
	Version   uint64  `json:"version,omitempty"`
}

type goldenSeal struct {
	Next         uint64 `json:"next"`
	Transactions uint64 `json:"transactions"`
	Changes      uint64 `json:"changes"`
	Time         int64  `json:"time_unix_nano"`
}

func textOrHex(b []byte, text bool) (*string, *string) {
	if text && utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	h := hex.EncodeToString(b)
	return nil, &h
}

func errName(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{{format.ErrTornTail, "torn_tail"}, {format.ErrChecksum, "checksum"}, {format.ErrCorrupt, "corrupt"},
		{format.ErrBadMagic, "bad_magic"}, {format.ErrVersion, "version"}} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "error: " + err.Error()
}

// decodeGolden reads data with the package's Reader into the JSON model.
func decodeGolden(t *testing.T, data []byte) goldenFile {
	var out goldenFile
	out.Frames = []goldenFrame{}
	rd, err := format.NewReader(bytes.NewReader(data), "")
	if err != nil {
		out.End.Result = errName(err)
		var pe *format.PositionError
		if errors.As(err, &pe) {
			out.End.Offset = pe.Offset
		}
		return out
	}
	h := rd.Header()
	out.Header = &goldenHeaderJSON{Version: h.Version, Length: h.Len, Source: h.Source, Segment: h.Segment, Created: h.Created}
	if h.Version >= 2 {
		out.Header.LowWatermark = h.LowWatermark.String()
	}
	for {
		f, err := rd.Next()
		if err == io.EOF {
			out.End.Offset, out.End.Result = rd.End(), "eof"
			return out
		}
		if err != nil {
			var pe *format.PositionError
			if !errors.As(err, &pe) {
				t.Fatalf("reader error %v is not a *PositionError", err)
			}
			out.End.Offset, out.End.Result = pe.Offset, errName(err)
			return out
		}
		raw := rd.Raw()
		gf := goldenFrame{Offset: rd.Offset(), Length: len(f.Payload), CRC: fmt.Sprintf("%08x", binary.LittleEndian.Uint32(raw[4:])),
			Type: int(f.Type), TypeName: f.Type.String()}
		switch f.Type {
		case format.FrameTx:
			var tx format.Tx
			if err := format.DecodeTx(f.Payload, &tx); err != nil {
				t.Fatalf("offset %d: %v", rd.Offset(), err)
			}
			gt := &goldenTx{CommitTime: tx.CommitTime, ID: tx.ID, Origin: tx.Origin, Prepared: tx.Prepared, Command: tx.Command}
			for _, c := range tx.Changes {
				text := c.Content != format.ContentBinary
				gc := goldenChange{Table: c.Table, Op: c.Op.String(), Content: c.Content.String(), Version: c.Version}
				gc.Key, gc.KeyHex = textOrHex(c.Key, true)
				gc.After, gc.AfterHex = textOrHex(c.After, text)
				if c.Before != nil {
					gc.Before, gc.BeforeHex = textOrHex(c.Before, text)
				}
				gt.Changes = append(gt.Changes, gc)
			}
			gf.Tx = gt
		case format.FrameSeal:
			s, _ := format.DecodeSeal(f.Payload)
			gf.Seal = &goldenSeal{Next: s.Next, Transactions: s.Transactions, Changes: s.Changes, Time: s.Time}
		case format.FrameHeartbeat:
			ts, err := format.DecodeHeartbeat(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			gf.Heartbeat = &ts
		case format.FrameRejection:
			r, err := format.DecodeRejection(f.Payload)
			if err != nil {
				t.Fatalf("offset %d: %v", rd.Offset(), err)
			}
			gf.Rejection = &goldenRejection{Time: r.Time, Command: r.Command, Origin: r.Origin, Reason: r.Reason}
		case format.FrameApplied:
			a, err := format.DecodeApplied(f.Payload)
			if err != nil {
				t.Fatalf("offset %d: %v", rd.Offset(), err)
			}
			gf.Applied = &goldenApplied{Time: a.Time, Command: a.Command, Origin: a.Origin, TxID: a.TxID, Version: a.Version}
		case format.FrameOutcome:
			var o format.Outcome
			if err := format.DecodeOutcome(f.Payload, &o); err != nil {
				t.Fatalf("offset %d: %v", rd.Offset(), err)
			}
			gf.Outcome = &goldenOutcome{Time: o.Time}
			for _, r := range o.Resolutions {
				gf.Outcome.Resolutions = append(gf.Outcome.Resolutions,
					goldenResolution{Segment: r.Prepared.Segment, Offset: r.Prepared.Offset, Decision: r.Decision.String()})
			}
		default:
			gf.Payload = hex.EncodeToString(f.Payload)
		}
		out.Frames = append(out.Frames, gf)
	}
}

func TestGoldenVectors(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			base := filepath.Join("testdata", g.name)
			built := g.build(t)
			if *update {
				dec, _ := json.MarshalIndent(decodeGolden(t, built), "", "  ")
				for ext, b := range map[string][]byte{".ferry": built, ".json": append(dec, '\n'), ".hex": []byte(annotate(built))} {
					if err := os.WriteFile(base+ext, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			data, err := os.ReadFile(base + ".ferry")
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenVectors -update to create the vectors)", err)
			}
			if g.valid && !bytes.Equal(data, built) {
				t.Fatalf("the encoder no longer produces %s.ferry byte for byte: the format changed", base)
			}
			wantJSON, err := os.ReadFile(base + ".json")
			if err != nil {
				t.Fatal(err)
			}
			var want goldenFile
			if err := json.Unmarshal(wantJSON, &want); err != nil {
				t.Fatalf("%s.json: %v", base, err)
			}
			got := decodeGolden(t, data)
			g1, _ := json.Marshal(got)
			w1, _ := json.Marshal(want)
			if !bytes.Equal(g1, w1) {
				t.Fatalf("decoding %s.ferry:\n got %s\nwant %s", base, g1, w1)
			}
			if g.valid && got.End.Result != "eof" {
				t.Fatalf("valid vector %s ends with %s", g.name, got.End.Result)
			}
			wantHex, err := os.ReadFile(base + ".hex")
			if err != nil {
				t.Fatal(err)
			}
			if a := annotate(data); a != string(wantHex) {
				t.Fatalf("%s.hex is stale (run with -update)", base)
			}
			if b, err := parseAnnotatedHex(string(wantHex)); err != nil || !bytes.Equal(b, data) {
				t.Fatalf("%s.hex does not hold the bytes of %s.ferry (%v)", base, base, err)
			}
		})
	}
}

// parseAnnotatedHex reads the bytes back from an annotated hex dump: hex
// digits before a '#' on each line.
func parseAnnotatedHex(s string) ([]byte, error) {
	var out []byte
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		b, err := hex.DecodeString(strings.Join(strings.Fields(line), ""))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// annotator writes an annotated hex dump, one field per line.
type annotator struct {
	sb   strings.Builder
	data []byte
	off  int
}

func (a *annotator) field(n int, format string, args ...any) bool {
	if a.off+n > len(a.data) {
		return false
	}
	h := hex.EncodeToString(a.data[a.off : a.off+n])
	if len(h) > 32 {
		// Long fields: 16 bytes per line, the comment on the first.
		first := true
		for i := 0; i < len(h); i += 32 {
			j := min(i+32, len(h))
			if first {
				fmt.Fprintf(&a.sb, "%-34s # %s\n", h[i:j], fmt.Sprintf(format, args...))
				first = false
			} else {
				fmt.Fprintf(&a.sb, "%s\n", h[i:j])
			}
		}
	} else {
		fmt.Fprintf(&a.sb, "%-34s # %s\n", h, fmt.Sprintf(format, args...))
	}
	a.off += n
	return true
}

func (a *annotator) rest(why string) {
	if a.off < len(a.data) {
		a.field(len(a.data)-a.off, "%s (%d bytes)", why, len(a.data)-a.off)
	}
}

func (a *annotator) varint(what string) (uint64, bool) {
	v, n := binary.Uvarint(a.data[a.off:])
	if n <= 0 {
		return 0, false
	}
	return v, a.field(n, "%s = %d (uvarint)", what, v)
}

func (a *annotator) bytesField(what string) bool {
	n, ok := a.varint(what + " length")
	if !ok || a.off+int(n) > len(a.data) {
		return false
	}
	if n == 0 {
		return true
	}
	b := a.data[a.off : a.off+int(n)]
	desc := hex.EncodeToString(b)
	if utf8.Valid(b) {
		desc = fmt.Sprintf("%q", b)
	}
	if len(desc) > 60 {
		desc = desc[:57] + "..."
	}
	return a.field(int(n), "%s %s", what, desc)
}

func annotate(data []byte) string {
	a := &annotator{data: data}
	a.sb.WriteString("# Annotated hex of the .ferry file next to this one (see format/SPEC.md).\n")
	a.sb.WriteString("# Bytes are hex before '#'; comments follow it. Integers are little endian.\n\n")
	a.sb.WriteString("# segment header\n")
	if len(data) < format.MinHeaderLen || !a.field(8, "magic %q", data[:8]) {
		a.rest("truncated header")
		return a.sb.String()
	}
	ok := a.field(2, "version = %d", u16(data, 8)) &&
		a.field(2, "header length = %d", u16(data, 10)) &&
		a.field(4, "flags = %d", u32(data, 12)) &&
		a.field(8, "segment = %d", u64(data, 16)) &&
		a.field(8, "created = %d (unix ns)", u64(data, 24)) &&
		a.field(1, "source length = %d", data[32])
	if !ok || int(data[32])+37 > len(data) {
		a.rest("truncated header")
		return a.sb.String()
	}
	hl := int(u16(data, 10))
	a.field(int(data[32]), "source %q", data[33:33+int(data[32])])
	if hl < 37 || hl > len(data) || a.off > hl-4 {
		a.rest("rest of a broken header")
		return a.sb.String()
	}
	if u16(data, 8) >= 2 && a.off+16 <= hl-4 {
		a.field(8, "low watermark segment = %d", u64(data, a.off))
		a.field(8, "low watermark offset = %d", u64(data, a.off))
	}
	if a.off < hl-4 {
		a.field(hl-4-a.off, "header extension")
	}
	a.field(4, "header crc32c = %08x", u32(data, hl-4))
	for n := 0; a.off < len(data); n++ {
		start := a.off
		fmt.Fprintf(&a.sb, "\n# frame %d at offset %d\n", n, start)
		if len(data)-start < format.FrameHeaderLen {
			a.rest("incomplete frame header")
			break
		}
		plen := int(u32(data, start))
		typ := format.FrameType(data[start+8])
		a.field(4, "payload length = %d", plen)
		a.field(4, "crc32c = %08x (of type and payload)", u32(data, start+4))
		a.field(1, "type = %d (%s)", typ, typ)
		end := start + format.FrameHeaderLen + plen
		if end > len(data) || plen > format.MaxFrameLen {
			a.rest("payload cut short")
			break
		}
		if !a.payload(typ, end) {
			a.off = start + format.FrameHeaderLen
			a.rest("payload")
			break
		}
		a.off = end
	}
	return a.sb.String()
}

func (a *annotator) payload(typ format.FrameType, end int) bool {
	d := a.data
	sub := &annotator{data: d[:end], off: a.off}
	switch typ {
	case format.FrameSeal:
		if end-a.off != 32 {
			return false
		}
		sub.field(8, "next segment = %d", u64(d, a.off))
		sub.field(8, "transactions = %d", u64(d, a.off+8))
		sub.field(8, "changes = %d", u64(d, a.off+16))
		sub.field(8, "sealed = %d (unix ns)", u64(d, a.off+24))
	case format.FrameHeartbeat:
		if end-a.off != 8 {
			return false
		}
		sub.field(8, "time = %d (unix ns)", u64(d, a.off))
	case format.FrameRejection:
		if end-a.off < 9 {
			return false
		}
		sub.field(8, "time = %d (unix ns)", u64(d, a.off))
		if !sub.bytesField("command id") || !sub.bytesField("origin") || !sub.bytesField("reason") || sub.off != end {
			return false
		}
	case format.FrameApplied:
		if end-a.off < 12 {
			return false
		}
		sub.field(8, "time = %d (unix ns)", u64(d, a.off))
		if !sub.bytesField("command id") || !sub.bytesField("origin") || !sub.bytesField("transaction id") {
			return false
		}
		if _, ok := sub.varint("row version"); !ok || sub.off != end {
			return false
		}
	case format.FrameOutcome:
		if end-a.off < 9 {
			return false
		}
		sub.field(8, "time = %d (unix ns)", u64(d, a.off))
		n, ok := sub.varint("resolution count")
		if !ok {
			return false
		}
		for i := uint64(0); i < n; i++ {
			fmt.Fprintf(&sub.sb, "#   resolution %d\n", i)
			if _, ok := sub.varint("prepared frame's segment"); !ok {
				return false
			}
			if _, ok := sub.varint("prepared frame's offset"); !ok {
				return false
			}
			if sub.off >= end {
				return false
			}
			sub.field(1, "decision = %d (%s)", d[sub.off], format.Decision(d[sub.off]))
		}
		if sub.off != end {
			return false
		}
	case format.FrameTx:
		if end-a.off < 9 {
			return false
		}
		sub.field(8, "commit time = %d (unix ns)", u64(d, a.off))
		txFlags := d[a.off+8]
		sub.field(1, "tx flags = %d (%s%s)", txFlags, map[bool]string{true: "prepared", false: "committed"}[txFlags&1 != 0],
			map[bool]string{true: ", command id follows", false: ""}[txFlags&2 != 0])
		if !sub.bytesField("tx id") || !sub.bytesField("origin") {
			return false
		}
		if txFlags&2 != 0 && !sub.bytesField("command id") {
			return false
		}
		n, ok := sub.varint("change count")
		if !ok {
			return false
		}
		for i := uint64(0); i < n; i++ {
			if sub.off+3 > end {
				return false
			}
			fmt.Fprintf(&sub.sb, "#   change %d\n", i)
			flags := d[sub.off+2]
			sub.field(1, "op = %d (%s)", d[sub.off], format.Op(d[sub.off]))
			sub.field(1, "content type = %d (%s)", d[sub.off], format.ContentType(d[sub.off]))
			sub.field(1, "change flags = %d (before image %s, version %s)", flags,
				map[bool]string{true: "present", false: "absent"}[flags&1 != 0], map[bool]string{true: "present", false: "absent"}[flags&2 != 0])
			if !sub.bytesField("table") || !sub.bytesField("key") || !sub.bytesField("after") {
				return false
			}
			if flags&1 != 0 && !sub.bytesField("before") {
				return false
			}
			if flags&2 != 0 {
				if _, ok := sub.varint("row version"); !ok {
					return false
				}
			}
		}
		if sub.off != end {
			return false
		}
	default:
		if end > a.off {
			sub.field(end-a.off, "payload of a frame type this dump does not know")
		}
	}
	a.sb.WriteString(sub.sb.String())
	return true
}

func u16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func u32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func u64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
