// Package wiretest builds and publishes Ferry wire messages for the
// receiver's tests: it cuts segments written with format.Writer into
// wire.Batch messages exactly as format/wire describes them (so that tests
// can also craft republished, overlapping, split and corrupt ones), and runs
// an embedded JetStream server.
package wiretest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is one wire message: its description and raw (uncompressed) bytes.
type Msg struct {
	Batch wire.Batch
	Raw   []byte
}

// Frame is one frame of a segment with its place.
type Frame struct {
	Segment  uint64
	Off, End int64
	Raw      []byte
	Type     format.FrameType
	Changes  int
	Time     int64
	First    bool  // first frame of its segment
	PrevEnd  int64 // for First: where the previous segment ended (0 if none)
	HdrLen   int64
	Sealed   bool
	SegBytes int64
}

// Frames reads every frame of source's segments in dir.
func Frames(dir, source string) ([]Frame, error) {
	segs, err := format.ListSegments(dir, source)
	if err != nil {
		return nil, err
	}
	var out []Frame
	prevEnd := int64(0)
	for _, s := range segs {
		r, f, err := format.OpenReader(s.Path, 0)
		if err != nil {
			return nil, err
		}
		first := true
		for {
			fr, err := r.Next()
			if err == io.EOF || errors.Is(err, format.ErrTornTail) {
				break
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			x := Frame{Segment: s.Segment, Off: r.Offset(), End: r.End(), Raw: append([]byte(nil), r.Raw()...),
				Type: fr.Type, Time: format.FrameTime(fr), First: first, PrevEnd: prevEnd, HdrLen: int64(r.Header().Len)}
			if fr.Type == format.FrameTx {
				var tx format.Tx
				if err := format.DecodeTx(fr.Payload, &tx); err != nil {
					f.Close()
					return nil, err
				}
				x.Changes = len(tx.Changes)
			}
			first = false
			out = append(out, x)
		}
		prevEnd = r.End()
		f.Close()
	}
	return out, nil
}

// Cut groups frames into messages of at most maxRaw raw bytes (whole frames,
// one segment per message); a frame larger than maxRaw becomes a split
// frame of parts of at most maxRaw bytes.
func Cut(source string, frames []Frame, maxRaw int) []Msg {
	var out []Msg
	var cur *Msg
	flush := func() {
		if cur != nil {
			out = append(out, *cur)
			cur = nil
		}
	}
	for _, f := range frames {
		if cur != nil && (cur.Batch.Segment != f.Segment || len(cur.Raw)+len(f.Raw) > maxRaw) {
			flush()
		}
		if len(f.Raw) > maxRaw {
			parts := (len(f.Raw) + maxRaw - 1) / maxRaw
			for p := 0; p < parts; p++ {
				raw := f.Raw[p*maxRaw : min((p+1)*maxRaw, len(f.Raw))]
				b := wire.Batch{Source: source, Segment: f.Segment, From: f.Off, To: f.End, Frames: 1, Changes: f.Changes,
					FirstCommit: f.Time, LastCommit: f.Time, Part: p, Parts: parts, PrevEnd: -1, RawLen: len(raw)}
				if f.First && p == 0 {
					b.PrevEnd = f.PrevEnd
				}
				out = append(out, Msg{Batch: b, Raw: raw})
			}
			continue
		}
		if cur == nil {
			cur = &Msg{Batch: wire.Batch{Source: source, Segment: f.Segment, From: f.Off, To: f.Off, Parts: 1, PrevEnd: -1, FirstCommit: f.Time}}
			if f.First {
				cur.Batch.PrevEnd = f.PrevEnd
			}
		}
		cur.Raw = append(cur.Raw, f.Raw...)
		cur.Batch.To = f.End
		cur.Batch.Frames++
		cur.Batch.Changes += f.Changes
		cur.Batch.LastCommit = f.Time
		cur.Batch.RawLen = len(cur.Raw)
	}
	flush()
	return out
}

// Messages reads source's segments in dir and cuts them (Frames + Cut).
func Messages(t testing.TB, dir, source string, maxRaw int) []Msg {
	t.Helper()
	frames, err := Frames(dir, source)
	if err != nil {
		t.Fatalf("reading segments of %s in %s: %v", source, dir, err)
	}
	return Cut(source, frames, maxRaw)
}

// Publisher publishes Msgs to a stream.
type Publisher struct {
	JS     jetstream.JetStream
	Prefix string
	Codec  wire.Codec
	// NoMsgID leaves out Nats-Msg-Id, so that the server stores a
	// republished message again instead of dropping it as a duplicate.
	NoMsgID bool
	comp    *wire.Compressor
}

// Body compresses m's raw bytes with codec.
func (p *Publisher) Body(m Msg) ([]byte, error) {
	if p.comp == nil {
		c, err := wire.NewCompressor(zstd.SpeedFastest)
		if err != nil {
			return nil, err
		}
		p.comp = c
	}
	return p.comp.Compress(nil, m.Raw, p.Codec)
}

// PublishRaw publishes a message with the given headers and body as is.
func (p *Publisher) PublishRaw(ctx context.Context, source string, h map[string][]string, body []byte) (uint64, error) {
	msg := &nats.Msg{Subject: p.Prefix + "." + source, Header: nats.Header(h), Data: body}
	ack, err := p.JS.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("publishing to %s: %w", msg.Subject, err)
	}
	return ack.Sequence, nil
}

// Publish compresses and publishes msgs in order, returning the last
// stream sequence.
func (p *Publisher) Publish(ctx context.Context, msgs ...Msg) (uint64, error) {
	var seq uint64
	for _, m := range msgs {
		m.Batch.Codec = p.Codec
		body, err := p.Body(m)
		if err != nil {
			return 0, err
		}
		h := m.Batch.Header()
		if p.NoMsgID {
			delete(h, wire.HdrMsgID)
		}
		if seq, err = p.PublishRaw(ctx, m.Batch.Source, h, body); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

// Server is an embedded JetStream server.
type Server struct {
	S   *server.Server
	URL string
}

// StartServer starts a JetStream server on a free loopback port with its
// store in a temporary directory; it is shut down at the end of the test.
func StartServer(t testing.TB) *Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{S: s, URL: s.ClientURL()}
}

// Connect connects to the server, without a reconnect buffer as Ferry's
// publishers require (jsclient.CheckConn); the connection is closed at the
// end of the test.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("connecting to %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// CreateStream creates a file-backed stream for prefix.>.
func CreateStream(t testing.TB, js jetstream.JetStream, name, prefix string) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, MaxMsgSize: 8 << 20})
	if err != nil {
		t.Fatalf("creating stream %s: %v", name, err)
	}
	return st
}

// WriteSegments writes txs for source into dir with a format.Writer that
// rotates every rotate transactions (0: never) and closes it (sealing the
// last segment). Heartbeats are disabled so the content is deterministic.
func WriteSegments(t testing.TB, dir, source string, txs []format.Tx, rotate int) {
	t.Helper()
	w, err := format.OpenWriter(dir, source, format.WithSync(format.SyncNone, 0), format.WithHeartbeat(0), format.WithMaxSegmentAge(0))
	if err != nil {
		t.Fatalf("opening writer: %v", err)
	}
	for i := range txs {
		if _, err := w.Commit(&txs[i]); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		if rotate > 0 && (i+1)%rotate == 0 && i+1 < len(txs) {
			if err := w.Rotate(); err != nil {
				t.Fatalf("rotate: %v", err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("closing writer: %v", err)
	}
}
