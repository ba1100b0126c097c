package shipper

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/ferrysync/ferry/shipper/tail"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// inflight is a published message waiting for its ack.
type inflight struct {
	b    wire.Batch
	fut  jetstream.PubAckFuture
	size int64
	body int
	data []byte // the body, back to the pool once the publish resolved
	sent time.Time
	last bool // whole frames, or the last part: the acked position moves to To
}

// session is one run of publishing, from the stream's tail until an error,
// a reconnection or a stop. Its stages — the reading loop, the compression
// workers, the publisher and the acker — share this value and no per-run
// state of the Shipper. The first failure cancels ctx with the failure as
// its cause (context.Cause), which wakes and stops every stage that waits.
type session struct {
	ctx    context.Context // ends with Run's context or the first failure
	cancel context.CancelCauseFunc
	start  resumePoint // where the session started
	epoch  uint64      // the connection's epoch at the start: a reconnection ends the session

	free    chan []byte    // raw buffers: bounds the jobs between reader and publisher
	work    chan *job      // to the compression workers
	order   chan *job      // to the publisher, in file order
	pending chan *inflight // to the acker, in publish order
	workers sync.WaitGroup

	inFlightB, inFlightN atomic.Int64  // published, not yet acknowledged
	acks                 chan struct{} // an ack made room in flight (capacity 1: never lost)

	mu     sync.Mutex
	err    error
	failed *format.Position // where to re-ship from if the first failure left a hole
	hole   bool
}

// fail records the session's first failure, at batch b, and cancels the
// session with it.
func (ss *session) fail(err error, b *wire.Batch) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.err == nil {
		at := startOf(b)
		ss.err, ss.failed = err, &at
		ss.cancel(err)
	}
}

// stopped returns why the session's stages must stop: its first failure, or
// Run's context's end; nil while it runs.
func (ss *session) stopped() error {
	if ss.ctx.Err() == nil {
		return nil
	}
	return context.Cause(ss.ctx)
}

// resumeAfter returns where to ship from after b is stored: its end, or, if
// b is a part of a split frame but its last, the frame's start (the frame
// is re-sent whole, with PrevEnd if it opens its segment: every part
// carries it).
func resumeAfter(b *wire.Batch) format.Position {
	if b.Whole() {
		return b.End()
	}
	return startOf(b)
}

// startOf returns where a Follower must start to ship b again, so that b
// comes out with the same PrevEnd: from where the previous segment with
// frames ended (or the chain's start) if b opens its segment, else from
// b.From.
func startOf(b *wire.Batch) format.Position {
	if prev, ok := b.Prev(); ok {
		return prev
	}
	if b.PrevEnd == 0 {
		return format.Position{Segment: b.Segment}
	}
	return format.Position{Segment: b.Segment, Offset: b.From}
}

func (ss *session) state() (error, *format.Position, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.err, ss.failed, ss.hole
}

// resumePoint is where a session starts.
type resumePoint struct {
	// Pos is the position to ship from.
	Pos format.Position
	// FenceSeq is the stream sequence of the subject's last message (0:
	// none): the session's first publish is fenced on it.
	FenceSeq uint64
	// Repair is 0, or the repair number of a re-ship from a hole
	// (wire.Batch.Repair).
	Repair uint64
	// NoSegment is set when there is nothing to ship from yet: the stream
	// holds nothing for the subject and no segment is on disk.
	NoSegment bool
}

// resume works out where to start: the stream's last message for the
// subject, unless a hole must be repaired.
func (s *Shipper) resume(ctx context.Context, l *lease) (resumePoint, error) {
	last, err := s.st.LastMsg(ctx, s.subject)
	if errors.Is(err, jsclient.ErrStreamNotFound) {
		// Guarantee 6 (README.md, "A broker's ack is not durability"): the files are the safety net. Make the
		// stream again and re-ship what it lost from them.
		s.met.error("stream_lost")
		s.log.Error("the stream is gone (deleted, or the server lost its store): re-creating it with the same configuration and re-shipping from the change files",
			"stream", s.streamName(), "subject", s.subject, "err", err)
		if err := s.st.Recreate(ctx); err != nil {
			err = fmt.Errorf("shipper: re-creating the lost stream: %w", err)
			if errors.Is(err, jsclient.ErrIncompatible) {
				err = fatal(err) // someone else made it, differently: retrying will not help
			}
			return resumePoint{}, err
		}
		// The lease bucket may have gone with it: take the lease again
		// now rather than at the next renewal.
		if err := l.renew(ctx); err != nil {
			return resumePoint{}, err
		}
		last, err = s.st.LastMsg(ctx, s.subject)
	}
	if err != nil {
		return resumePoint{}, err
	}
	var pos format.Position
	var seq uint64
	if last != nil {
		b, err := wire.ParseHeader(last.Header)
		if err != nil {
			return resumePoint{}, fatal(fmt.Errorf("%w: the last message on %s (sequence %d) is not a Ferry batch: %v; something else publishes there",
				ErrSourceBusy, s.subject, last.Sequence, err))
		}
		if b.Source != s.source {
			return resumePoint{}, fatal(fmt.Errorf("%w: the last message on %s (sequence %d) is from source %q",
				ErrSourceBusy, s.subject, last.Sequence, b.Source))
		}
		seq = last.Sequence
		pos = resumeAfter(&b)
		if err := s.checkTail(ctx, last, &b); err != nil {
			return resumePoint{}, err
		}
	} else {
		first, ok, err := tail.First(s.dir, s.source)
		if err != nil {
			return resumePoint{}, fatal(err)
		}
		if err := s.checkNoGap(first, ok); err != nil {
			return resumePoint{}, err
		}
		if !ok {
			return resumePoint{NoSegment: true}, nil
		}
		pos = first
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var repair uint64
	if s.hole != nil && pos.Less(*s.hole) {
		// The stream's tail is before the hole: the stream lost what
		// followed it (or was re-created). Shipping from the tail covers
		// the hole too.
		s.log.Warn("a hole to repair is past the stream's tail now: shipping from the tail instead",
			"hole", s.hole.String(), "stream_tail", pos.String())
		s.hole = nil
	}
	if s.hole != nil {
		// Every session re-ships from the hole until an ack past it says
		// the stream holds it (acked clears it).
		s.log.Error("re-shipping from a hole in the stream: messages after it were stored while it failed",
			"hole", s.hole.String(), "stream_tail", pos.String())
		pos = *s.hole
		repair = uint64(time.Now().UnixNano())
	} else if known := s.stats.Acked; known.Segment > 0 && pos.Less(known) || s.hintOK && pos.Less(s.hint) {
		if known.Segment == 0 {
			known = s.hint
		}
		s.stats.Behind++
		s.met.error("stream_behind")
		s.log.Error("the stream's tail is behind what it acknowledged: the broker lost acknowledged messages; re-shipping from the stream's real tail",
			"acknowledged", known.String(), "stream_tail", pos.String(), "subject", s.subject,
			"hint", "set sync_interval: always and replicas 3 on the servers for broker-side durability")
		// What the stream lost is no longer acknowledged: retention must
		// keep it until it is acknowledged again, and the minimum age
		// counts from then.
		s.stats.Acked = pos
		s.ret.forget(pos.Segment)
	}
	s.hintOK = false
	if pos.Offset > 0 {
		s.stats.Acked = pos
	}
	s.stats.Published = pos
	return resumePoint{Pos: pos, FenceSeq: seq, Repair: repair}, nil
}

// checkTail checks the stream's chain under its last message for the
// subject, last (parsed: b), if the sessions before published messages that
// may have reached a server the client reconnected to (suspects). A server
// killed after acknowledging messages it had not written loses them; one of
// these messages stored after them leaves a hole the stream's tail hides.
// It walks back from last while the messages are suspects and checks each
// link by the wire's chain rule; a break becomes the hole to repair (resume
// then re-ships from it). An error leaves the suspects for the next try.
func (s *Shipper) checkTail(ctx context.Context, last *jetstream.RawStreamMsg, b *wire.Batch) error {
	s.mu.Lock()
	suspects := s.suspects
	s.mu.Unlock()
	if len(suspects) == 0 {
		return nil
	}
	cur, cb := last, *b
	var hole *format.Position
	for steps := 0; steps <= len(suspects); steps++ {
		if _, ok := suspects[cb.MsgID()]; !ok {
			break // stored before the reconnection
		}
		prev, err := s.st.PrevMsg(ctx, s.subject, cur.Sequence)
		if err != nil {
			return fmt.Errorf("shipper: checking the stream under %s after a reconnection: %w", cb.MsgID(), err)
		}
		if prev == nil {
			if cb.PrevEnd != 0 {
				// Nothing of the source is left under it: ship from the
				// first segment on disk, as for an empty stream.
				first, ok, err := tail.First(s.dir, s.source)
				if err != nil {
					return fatal(err)
				}
				if err := s.checkNoGap(first, ok); err != nil {
					return err
				}
				if ok {
					hole = &first
				}
			}
			break
		}
		pb, err := wire.ParseHeader(prev.Header)
		if err != nil || pb.Source != s.source {
			return fatal(fmt.Errorf("%w: the message at sequence %d on %s is not a Ferry batch of source %s (%v): something else publishes there",
				ErrSourceBusy, prev.Sequence, s.subject, s.source, err))
		}
		if !linked(&pb, &cb) {
			at := resumeAfter(&pb)
			hole = &at
			s.log.Error("hole in the stream after a reconnection: the server lost acknowledged messages and stored a later one; it will be repaired",
				"stored", cb.MsgID(), "sequence", cur.Sequence, "after", pb.MsgID(), "after_sequence", prev.Sequence)
			break
		}
		cur, cb = prev, pb
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.suspects = nil
	if hole != nil {
		s.met.error("stream_hole")
		s.stats.Repairs++
		if s.hole == nil || hole.Less(*s.hole) {
			s.hole = hole
		}
		s.ret.forget(hole.Segment) // not acknowledged any more: keep it until it is again
	}
	return nil
}

// linked reports whether next directly follows prev on a source's subject:
// it continues the chain from where prev leaves it, and the next part of a
// split frame follows the part before it.
func linked(prev, next *wire.Batch) bool {
	if next.Parts > 1 && next.Part > 0 {
		return prev.Parts == next.Parts && prev.Part == next.Part-1 &&
			prev.Segment == next.Segment && prev.From == next.From
	}
	_, err := next.Continues(prev.End())
	return err == nil
}

// suspect notes that b may have been published to a server the client
// reconnected to, if the epoch moved since the session started. Called
// after every publish: only the epoch is read unless it moved.
func (s *Shipper) suspect(ss *session, b *wire.Batch) {
	if s.st.Epoch() == ss.epoch {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.suspects == nil {
		s.suspects = make(map[string]struct{})
	}
	s.suspects[b.MsgID()] = struct{}{}
}

// checkNoGap is called when the stream holds nothing for the subject and the
// oldest segment on disk is first (ok false: none). If this Shipper shipped
// before (it acknowledged something, or the checkpoint says so), the stream
// lost everything and needs the source from its first segment (1): if
// retention already removed segments, they cannot be re-shipped, and the
// Shipper stops naming them instead of silently shipping from a later one.
func (s *Shipper) checkNoGap(first format.Position, ok bool) error {
	s.mu.Lock()
	known := s.stats.Acked
	if known.Segment == 0 && s.hintOK {
		known = s.hint
	}
	s.mu.Unlock()
	if known.Segment == 0 || ok && first.Segment <= 1 {
		return nil
	}
	last := known.Segment
	if ok {
		last = first.Segment - 1
	}
	s.met.error("gap")
	return fatal(fmt.Errorf("%w: stream %s holds nothing on %s although %s was shipped up to %s, and segments 1-%d are no longer in %s (removed by retention after their acknowledgement): the stream cannot be rebuilt from the files; "+
		"put those segment files back into %s (from the archive directory or a backup) and restart, or rebuild the receivers from a fresh stream",
		ErrGap, s.streamName(), s.subject, s.source, known.String(), last, s.dir, s.dir))
}

var errReconnected = errors.New("shipper: reconnected to NATS: checking the stream's tail")

// errStreamGone ends an idle session whose stream vanished: the next one
// re-creates it and re-ships (resume).
var errStreamGone = errors.New("shipper: the stream is gone: re-creating it")

// job is one message on its way: cut by the reader, compressed by a
// worker, published in order by the publisher.
type job struct {
	b     wire.Batch
	raw   []byte // a pooled buffer holding the range (or part)
	body  []byte
	err   error
	last  bool // whole frames, or the last part
	ready chan struct{}
}

// bodyPool recycles message bodies. A body lives from its compression until
// its publish resolves (acknowledged or failed): until then the client may
// send it again.
type bodyPool struct{ p sync.Pool }

func (bp *bodyPool) get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

func (bp *bodyPool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	b = b[:0]
	bp.p.Put(&b)
}

// session ships from the stream's tail until an error, a reconnection or
// ctx ends. It reports whether it shipped anything.
//
// Stages: this goroutine reads and verifies frames (tail.Follower) and cuts
// them into jobs; Workers goroutines compress; one publisher publishes in
// file order (the session's first message fenced and synchronous, the rest
// asynchronously within the in-flight bounds); the acker waits for acks in
// order. An error anywhere fails the session (session.fail cancels its
// context with the error as the cause): every stage that waits wakes on it,
// stops and drains; none polls for it.
func (s *Shipper) session(ctx context.Context, watch *tail.Watch, l *lease) (bool, error) {
	epoch := s.st.Epoch()
	start, err := s.resume(ctx, l)
	if err != nil {
		return false, err
	}
	if start.NoSegment {
		// No segment yet: wait for the writer.
		s.wait(ctx, watch, s.o.poll)
		return false, nil
	}
	pos := start.Pos
	s.mu.Lock()
	s.stats.Sessions++
	s.mu.Unlock()
	fl, err := tail.Open(s.dir, s.source, pos, tail.Options{MaxBytes: s.maxRaw, MaxChanges: s.o.maxBatchChanges, ListEvery: s.o.poll})
	if errors.Is(err, tail.ErrMissing) && pos.Offset == 0 && !s.segmentsAfter(pos.Segment) {
		// The segment to start is not there yet, nor any after it: its
		// writer is creating it (or removed it, its header unwritten, to
		// create it again).
		s.wait(ctx, watch, s.o.poll)
		return false, nil
	}
	if errors.Is(err, tail.ErrMissing) {
		s.met.error("gap")
		return false, fatal(fmt.Errorf("%w: the stream %s ends on %s at %s, but segment %d is not in %s (removed by retention before the stream lost what followed it, moved away, or the wrong directory): %v; "+
			"put segment %d and the ones after it back into %s (from the archive directory or a backup) and restart, or rebuild the receivers from a fresh stream",
			ErrGap, s.streamName(), s.subject, pos.String(), pos.Segment, s.dir, err, pos.Segment, s.dir))
	}
	if err != nil {
		return false, fatal(err)
	}
	defer fl.Close()
	s.log.Debug("session", "from", pos.String(), "last_seq", start.FenceSeq, "repair", start.Repair)

	nbuf := len(s.comps) + 2
	ss := &session{
		start:   start,
		epoch:   epoch,
		free:    make(chan []byte, nbuf),
		work:    make(chan *job, nbuf),
		order:   make(chan *job, nbuf),
		pending: make(chan *inflight, s.o.maxInFlightMsgs),
		acks:    make(chan struct{}, 1),
	}
	ss.ctx, ss.cancel = context.WithCancelCause(ctx)
	defer ss.cancel(nil)
	for i := 0; i < nbuf; i++ {
		ss.free <- nil // allocated on first use
	}
	abandon := make(chan struct{})
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		s.acker(ss, abandon)
	}()
	for _, comp := range s.comps {
		ss.workers.Add(1)
		go func() {
			defer ss.workers.Done()
			s.compressor(comp, ss.work)
		}()
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		s.publisher(ss)
	}()

	shipped := false
	stuck := &partialWait{}
	defer stuck.clear(s)
	var lastCut time.Time
	nextUpkeep := time.Now()
	nextStreamCheck := time.Now().Add(s.o.streamCheck)
	var loopErr error
	for {
		if now := time.Now(); !now.Before(nextUpkeep) {
			s.upkeep(fl, now)
			nextUpkeep = now.Add(s.o.poll)
		}
		if ss.stopped() != nil {
			break // failed (the cause is the session's error), or stopped
		}
		if e := s.st.Epoch(); e != epoch {
			loopErr = errReconnected
			s.met.error("reconnect")
			break
		}
		if err := l.valid(); err != nil {
			loopErr = err
			s.met.error("lease")
			break
		}
		span, err := fl.Fill()
		if err != nil {
			s.met.error("corruption")
			loopErr = fatal(fmt.Errorf("shipper: source %s: %w", s.source, err))
			break
		}
		if span.Len() == 0 {
			stuck.check(s, fl)
			// Idle: publishes would notice a lost stream, so check
			// for one now and then while there are none.
			if now := time.Now(); !now.Before(nextStreamCheck) {
				nextStreamCheck = now.Add(s.o.streamCheck)
				if _, err := s.st.LastMsg(ss.ctx, s.subject); errors.Is(err, jsclient.ErrStreamNotFound) {
					loopErr = errStreamGone
					break
				}
			}
			s.wait(ss.ctx, watch, min(time.Until(nextUpkeep), time.Until(nextStreamCheck)))
			continue
		}
		nextStreamCheck = time.Now().Add(s.o.streamCheck)
		if !span.Big && !span.Full && s.o.linger > 0 {
			// Pace a live writer: a message that is not full leaves at
			// once, unless the previous one left less than linger ago.
			// Meanwhile the writer's appends gather without waking this
			// goroutine at each of them (a file event per append): one
			// read per linger, not one per write.
			if left := s.o.linger - time.Since(lastCut); left > 0 {
				s.sleep(ss.ctx, left)
				continue
			}
		}
		lastCut = time.Now()
		if err := s.cut(ss, fl, span); err != nil {
			loopErr = err
			break
		}
		fl.Consume(span)
		shipped = true
	}

	// Stop the stages, then wait for every ack within the drain timeout.
	close(ss.work)
	close(ss.order)
	ss.workers.Wait()
	<-pubDone
	close(ss.pending)
	timer := time.NewTimer(s.o.drainTimeout)
	select {
	case <-ackerDone:
	case <-timer.C:
		s.log.Warn("gave up waiting for acks; the next start re-ships from the stream's tail", "after", s.o.drainTimeout)
		close(abandon)
		<-ackerDone
	}
	timer.Stop()
	serr, failedAt, hole := ss.state()
	if hole && failedAt != nil {
		s.mu.Lock()
		if s.hole == nil || failedAt.Less(*s.hole) {
			s.hole = failedAt // kept in the checkpoint until repaired
		}
		s.stats.Repairs++
		s.mu.Unlock()
	}
	s.upkeep(fl, time.Now())
	s.saveCheckpoint()
	var fe *fatalError
	if loopErr == nil || errors.As(serr, &fe) {
		loopErr = serr
	}
	return shipped, loopErr
}

// wait sleeps until a file event, ctx's end or d.
func (s *Shipper) wait(ctx context.Context, watch *tail.Watch, d time.Duration) {
	if d <= 0 {
		return
	}
	var events <-chan struct{}
	if watch != nil {
		events = watch.C()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-events:
	case <-t.C:
	}
}

// sleep sleeps for d or until ctx's end, deaf to file events: what they
// announce is read when it ends.
func (s *Shipper) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// cut turns span into jobs: one message, or the parts of one big frame.
func (s *Shipper) cut(ss *session, fl *tail.Follower, span tail.Span) error {
	if span.PrevEnd >= 0 && span.Torn > 0 {
		s.log.Warn("segment abandoned by a crashed writer: its torn tail (or torn header) is not shipped",
			"before_segment", span.Segment, "prev_end", span.PrevEnd, "torn_bytes", span.Torn)
		s.met.tornBytes.Add(float64(span.Torn))
		s.mu.Lock()
		s.stats.TornBytes += span.Torn
		s.mu.Unlock()
	}
	b := wire.Batch{
		Source: s.source, Segment: span.Segment, From: span.From, To: span.To,
		Frames: span.Frames, Changes: span.Changes, FirstCommit: span.FirstCommit, LastCommit: span.LastCommit,
		Codec: s.o.codec, Parts: 1, PrevEnd: span.PrevEnd, PrevSegment: span.PrevSegment, Torn: span.Torn, Repair: ss.start.Repair,
	}
	if !span.Big {
		buf, err := s.buffer(ss)
		if err != nil {
			return err
		}
		b.RawLen = len(span.Raw)
		ss.enqueue(&job{b: b, raw: append(buf, span.Raw...), last: true})
		return nil
	}
	n := int((span.Len() + int64(s.maxRaw) - 1) / int64(s.maxRaw))
	b.Parts = n
	for i := 0; i < n; i++ {
		off := span.From + int64(i)*int64(s.maxRaw)
		k := min(int64(s.maxRaw), span.To-off)
		buf, err := s.buffer(ss)
		if err != nil {
			return err
		}
		raw := buf[:k]
		if _, err := fl.ReadAt(raw, off); err != nil {
			return fatal(err)
		}
		pb := b
		pb.Part, pb.RawLen = i, int(k)
		if i > 0 {
			// PrevEnd stays on every part, so that a shipper restarting in
			// the middle of the frame knows where the previous segment
			// ended; the torn bytes are reported once.
			pb.Torn = 0
		}
		ss.enqueue(&job{b: pb, raw: raw, last: i == n-1})
	}
	return nil
}

// buffer takes a free raw buffer, waiting while every buffer is in a job,
// until the session stops.
func (s *Shipper) buffer(ss *session) ([]byte, error) {
	select {
	case buf := <-ss.free:
		if cap(buf) < s.maxRaw {
			buf = make([]byte, 0, s.maxRaw)
		}
		return buf[:0], nil
	case <-ss.ctx.Done():
		return nil, ss.stopped()
	}
}

func (ss *session) enqueue(j *job) {
	j.ready = make(chan struct{})
	ss.order <- j // never blocks: order holds as many jobs as there are buffers
	ss.work <- j
}

// compressor compresses jobs until work is closed.
func (s *Shipper) compressor(comp *wire.Compressor, work <-chan *job) {
	for j := range work {
		out, err := comp.Compress(s.bodies.get(), j.raw, j.b.Codec)
		if err != nil {
			j.err = fatal(err)
		} else {
			j.body = out // lives until its publish resolves
		}
		close(j.ready)
	}
}

// publisher publishes jobs in order until order is closed. After an error or
// a stop it only recycles the buffers of what is left.
func (s *Shipper) publisher(ss *session) {
	fenced := true
	for j := range ss.order {
		<-j.ready
		err := j.err
		if err == nil && ss.stopped() == nil {
			if s.st.Epoch() != ss.epoch {
				// Messages lost with the old connection must not be
				// followed by these: the next session starts from the
				// stream's tail.
				err = errReconnected
			} else {
				err = s.publish(ss, j, &fenced)
			}
		}
		ss.free <- j.raw[:0]
		if j.body != nil {
			// Not handed to the acker (unsent, or published and
			// acknowledged synchronously): the body is free now.
			s.bodies.put(j.body)
			j.body = nil
		}
		if err != nil {
			ss.fail(err, &j.b)
		}
	}
}

// publish publishes j: fenced and synchronous for the session's first
// message, asynchronous after.
func (s *Shipper) publish(ss *session, j *job, fenced *bool) error {
	b := &j.b
	hdr := nats.Header(b.Header())
	size := int64(len(j.body))
	for k, v := range hdr {
		size += int64(len(k) + len(v[0]) + 4)
	}
	if size > int64(s.st.MaxPayload()) {
		return fatal(fmt.Errorf("shipper: message %s of %d bytes over the server's max_payload %d", b.MsgID(), size, s.st.MaxPayload()))
	}
	msg := &nats.Msg{Subject: s.subject, Header: hdr, Data: j.body}
	if *fenced {
		start := time.Now()
		ack, err := s.st.PublishFenced(ss.ctx, msg, ss.start.FenceSeq)
		s.suspect(ss, b)
		if errors.Is(err, jsclient.ErrFenced) {
			s.met.error("fenced")
			return fatal(fmt.Errorf("%w: %v; stop the other shipper", ErrSourceBusy, err))
		}
		if err != nil {
			s.met.error("publish")
			return fmt.Errorf("shipper: publishing %s: %w", b.MsgID(), err)
		}
		*fenced = false
		s.acked(&inflight{b: *b, body: len(j.body), sent: start, last: j.last}, ack)
		return nil
	}
	// Respect the bounds on what is in flight.
	for ss.inFlightB.Load() > 0 && (ss.inFlightB.Load()+size > s.o.maxInFlightBytes || ss.inFlightN.Load() >= int64(s.o.maxInFlightMsgs)) {
		select {
		case <-ss.acks:
		case <-ss.ctx.Done():
			return ss.stopped()
		}
	}
	fut, err := s.st.PublishAsync(msg)
	if err != nil {
		s.met.error("publish")
		return fmt.Errorf("shipper: publishing %s: %w", b.MsgID(), err)
	}
	s.suspect(ss, b)
	ss.inFlightB.Add(size)
	ss.inFlightN.Add(1)
	s.mu.Lock()
	s.stats.Published = format.Position{Segment: b.Segment, Offset: b.To}
	s.mu.Unlock()
	ss.pending <- &inflight{b: *b, fut: fut, size: size, body: len(j.body), data: j.body, sent: time.Now(), last: j.last}
	j.body = nil // the acker's now
	return nil
}

// acker waits for the acks of pending in order and advances the acknowledged
// position. After the first failure it only drains, noting a hole if a later
// message was stored anyway.
func (s *Shipper) acker(ss *session, abandon <-chan struct{}) {
	failed := false
	for it := range ss.pending {
		var ack *jetstream.PubAck
		var err error
		select {
		case ack = <-it.fut.Ok():
		case err = <-it.fut.Err():
		case <-abandon:
			return // the client may still hold the bodies: left to the GC
		}
		s.bodies.put(it.data)
		ss.inFlightB.Add(-it.size)
		ss.inFlightN.Add(-1)
		switch {
		case err != nil:
			if !failed {
				failed = true
				s.met.error("publish")
				ss.fail(fmt.Errorf("shipper: publish of %s failed: %w", it.b.MsgID(), err), &it.b)
			}
		case failed:
			if !ack.Duplicate {
				ss.mu.Lock()
				if !ss.hole {
					ss.hole = true
					s.met.error("stream_hole")
					s.log.Error("hole in the stream: a message was stored after one that failed; it will be repaired",
						"stored", it.b.MsgID(), "sequence", ack.Sequence, "failed_at", ss.failed.String())
				}
				ss.mu.Unlock()
			}
		default:
			s.acked(it, ack)
		}
		select {
		case ss.acks <- struct{}{}:
		default:
		}
	}
}

// acked records an acknowledged message.
func (s *Shipper) acked(it *inflight, ack *jetstream.PubAck) {
	s.met.publishLatency.Observe(time.Since(it.sent).Seconds())
	s.met.batches.Inc()
	s.met.compressedBytes.Add(float64(it.body))
	s.met.rawBytes.Add(float64(it.b.RawLen))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Batches++
	s.stats.CompressedBytes += uint64(it.body)
	s.stats.RawBytes += uint64(it.b.RawLen)
	if !it.last {
		return
	}
	s.met.frames.Add(float64(it.b.Frames))
	s.met.records.Add(float64(it.b.Changes))
	s.stats.Frames += uint64(it.b.Frames)
	s.stats.Changes += uint64(it.b.Changes)
	s.stats.Acked = format.Position{Segment: it.b.Segment, Offset: it.b.To}
	if s.hole != nil && s.hole.Less(s.stats.Acked) {
		s.hole = nil // repaired: the stream holds what follows it
	}
	if it.b.LastCommit > 0 {
		s.stats.LastCommit = it.b.LastCommit
	}
	if s.stats.Published.Less(s.stats.Acked) {
		s.stats.Published = s.stats.Acked
	}
	s.met.shippedSegment.Set(float64(it.b.Segment))
	s.met.shippedOffset.Set(float64(it.b.To))
}

// upkeep refreshes the backlog and lag metrics, writes the checkpoint and
// applies retention. fl is nil between sessions.
func (s *Shipper) upkeep(fl *tail.Follower, now time.Time) {
	s.mu.Lock()
	acked, lastCommit := s.stats.Acked, s.stats.LastCommit
	s.mu.Unlock()
	var backlog int64
	var segs int
	if list, err := format.ListSegments(s.dir, s.source); err == nil {
		for i, sf := range list {
			if sf.Segment < acked.Segment {
				continue
			}
			var size int64
			if fl != nil && sf.Segment == fl.Pos().Segment && fl.Size() > 0 {
				size = fl.Size()
			} else if fi, err := segmentSize(sf.Path, i == len(list)-1); err == nil {
				size = fi
			}
			rest := size
			if sf.Segment == acked.Segment {
				rest = size - acked.Offset
			}
			if rest > 0 {
				backlog += rest
				segs++
			}
		}
	}
	lag := 0.0
	if backlog > 0 && lastCommit > 0 {
		lag = now.Sub(time.Unix(0, lastCommit)).Seconds()
	}
	s.met.backlogBytes.Set(float64(backlog))
	s.met.backlogSegments.Set(float64(segs))
	s.met.lagSeconds.Set(lag)
	s.mu.Lock()
	s.stats.BacklogBytes, s.stats.BacklogSegments = backlog, segs
	s.mu.Unlock()
	s.saveCheckpoint()
	if acked.Segment > 0 {
		done, err := s.ret.apply(s.dir, s.source, acked, now)
		for _, p := range done {
			s.log.Info("retention", "policy", s.o.retention, "segment", p)
		}
		if err != nil {
			s.met.error("retention")
			s.log.Warn("retention failed", "err", err)
		}
	}
}

// partialWait watches the Follower waiting at a partial frame at the end of
// the newest segment. That is normal for a moment (a write in progress) and
// for good when the writer crashed and has not started again (its next start
// moves on): after a few polls the wait is logged once, shown in Stats and
// in ferry_ship_partial_frame_bytes, so that it is never silent.
type partialWait struct {
	at    format.Position
	since time.Time
	told  bool
}

func (w *partialWait) check(s *Shipper, fl *tail.Follower) {
	at, n := fl.Partial()
	if n == 0 {
		w.clear(s)
		return
	}
	now := time.Now()
	if at != w.at || w.since.IsZero() {
		w.clear(s)
		w.at, w.since = at, now
		return
	}
	if w.told || now.Sub(w.since) < partialWaitReport(s.o.poll) {
		return
	}
	w.told = true
	s.log.Warn("waiting at a partial frame at the end of the newest segment: a writer in the middle of a write, or one that crashed and has not started again (a new writer's next segment moves the shipper on; nothing after these bytes is shipped until then)",
		"segment", at.Segment, "offset", at.Offset, "bytes", n, "waiting", now.Sub(w.since).Round(time.Second), "file", fl.Path())
	s.met.partialBytes.Set(float64(n))
	s.mu.Lock()
	s.stats.Partial, s.stats.PartialBytes = at, n
	s.mu.Unlock()
}

func (w *partialWait) clear(s *Shipper) {
	if w.told {
		s.log.Info("the partial frame is gone: shipping on", "segment", w.at.Segment, "offset", w.at.Offset)
		s.met.partialBytes.Set(0)
		s.mu.Lock()
		s.stats.Partial, s.stats.PartialBytes = format.Position{}, 0
		s.mu.Unlock()
	}
	*w = partialWait{}
}

// partialWaitReport is how long a wait at a partial frame lasts before it is
// reported: a write in progress takes milliseconds.
func partialWaitReport(poll time.Duration) time.Duration { return max(5*poll, 2*time.Second) }

// segmentsAfter reports whether a segment numbered above seg exists.
func (s *Shipper) segmentsAfter(seg uint64) bool {
	segs, err := format.ListSegments(s.dir, s.source)
	if err != nil {
		return true // let the caller's error stand
	}
	return len(segs) > 0 && segs[len(segs)-1].Segment > seg
}
