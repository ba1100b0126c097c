package bench

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

const interruptSignal = syscall.SIGINT

// capture is a mode's way of getting changes out of the legacy.
type capture interface {
	// setup prepares the mode's database before the legacy starts.
	setup(ctx context.Context, conn *pgx.Conn) error
	// start starts shipping to JetStream.
	start(ctx context.Context) error
	// shippedChanges says how many changes are in JetStream so far.
	shippedChanges() int64
	// failed returns the first error of a background component.
	failed() error
	// stop stops shipping and waits for it.
	stop()
}

// settler is a capture with upkeep on the legacy database after shipping
// (cdc-table's cleanup), which the drain phase waits for and counts.
type settler interface {
	settle(ctx context.Context) error
}

// phaseMeter takes the snapshots that bound a timed phase.
type phaseMeter struct {
	conn     *pgx.Conn // to the mode's database
	pgPid    int       // postmaster, 0 when not on this host
	childPid func() int
	fileSize func() int64
	schemas  []string
}

type snapshot struct {
	at          time.Time
	proc, child time.Duration
	db          time.Duration
	ctr         pg.Counters
	file        int64
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *phaseMeter) cpu(s *snapshot) {
	s.proc = processCPU()
	if m.childPid != nil {
		if pid := m.childPid(); pid > 0 {
			s.child, _ = pg.ProcessCPU(pid)
		}
	}
}

func (m *phaseMeter) counters(ctx context.Context, s *snapshot) error {
	if err := pg.Checkpoint(ctx, m.conn); err != nil {
		return err
	}
	if m.pgPid > 0 {
		s.db, _ = pg.ServerCPU(m.pgPid)
	}
	var err error
	if s.ctr, err = pg.ReadCounters(ctx, m.conn, m.schemas...); err != nil {
		return err
	}
	if m.fileSize != nil {
		s.file = m.fileSize()
	}
	return nil
}

// measure runs fn as a timed phase: a CHECKPOINT and the counters before,
// the clock and this process's CPU around fn, and a CHECKPOINT (so that the
// pages fn dirtied are written and counted) and the counters after. fn may
// return the time its measured work ended (zero: when it returned), when
// what follows is upkeep to count but not to time. status, if not nil, is
// printed every second while fn runs.
func (m *phaseMeter) measure(ctx context.Context, progress func(string, ...any), label string, status func(elapsed time.Duration) string, fn func() (time.Time, error)) (Phase, error) {
	var s0, s1 snapshot
	if err := m.counters(ctx, &s0); err != nil {
		return Phase{}, err
	}
	m.cpu(&s0)
	s0.at = time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if status != nil {
					progress("%s %s", label, status(time.Since(s0.at)))
				}
			}
		}
	}()
	end, err := fn()
	close(stop)
	<-done
	s1.at = time.Now()
	if !end.IsZero() {
		s1.at = end
	}
	m.cpu(&s1)
	if err != nil {
		return Phase{}, err
	}
	if err := m.counters(ctx, &s1); err != nil {
		return Phase{}, err
	}
	d := s1.ctr.Sub(s0.ctr)
	return Phase{
		Seconds:        s1.at.Sub(s0.at).Seconds(),
		WALBytes:       int64(d.WALLSN),
		DataBytes:      d.BuffersWritten * d.BlockSize,
		FileBytes:      s1.file - s0.file,
		RelationGrowth: d.RelationBytes,
		WALFPI:         d.WALFPI,
		DBCPU:          (s1.db - s0.db).Seconds(),
		ProcCPU:        (s1.proc - s0.proc).Seconds(),
		ChildCPU:       (s1.child - s0.child).Seconds(),
	}, nil
}

// add accumulates q (a slice of the same phase) into p.
func (p *Phase) add(q Phase) {
	p.SliceTxPerSec = append(p.SliceTxPerSec, q.TxPerSec)
	p.Seconds += q.Seconds
	p.WALBytes += q.WALBytes
	p.DataBytes += q.DataBytes
	p.FileBytes += q.FileBytes
	p.RelationGrowth += q.RelationGrowth
	p.WALFPI += q.WALFPI
	p.DBCPU += q.DBCPU
	p.ProcCPU += q.ProcCPU
	p.ChildCPU += q.ChildCPU
	if q.TxStages != nil && q.Txs > 0 {
		// A mean over the slices, weighted by their transactions.
		if p.TxStages == nil {
			p.TxStages = &TxStages{}
		}
		prev, n := float64(p.Txs), float64(p.Txs+q.Txs)
		a, b := p.TxStages, q.TxStages
		a.Exec = (a.Exec*prev + b.Exec*float64(q.Txs)) / n
		a.Append = (a.Append*prev + b.Append*float64(q.Txs)) / n
		a.Commit = (a.Commit*prev + b.Commit*float64(q.Txs)) / n
		a.After = (a.After*prev + b.After*float64(q.Txs)) / n
	}
	p.Txs += q.Txs
	p.Changes += q.Changes
	p.count(p.Txs, p.Changes)
}

// stages sets p.TxStages from the legacy's stage times at its end and start
// (legacy.stageTimes); p.Txs is counted.
func (p *Phase) stages(end, start [numStages]int64) {
	if p.Txs == 0 {
		return
	}
	us := func(s stage) float64 { return float64(end[s]-start[s]) / float64(p.Txs) / 1e3 }
	p.TxStages = &TxStages{Exec: us(stageExec), Append: us(stageAppend), Commit: us(stageCommit), After: us(stageAfter)}
}

func (p *Phase) count(txs, changes int64) {
	p.Txs, p.Changes = txs, changes
	if p.Seconds > 0 {
		p.TxPerSec = float64(txs) / p.Seconds
		p.ChangesPerSec = float64(changes) / p.Seconds
	}
}

// waitFor polls cond every 2 ms until it holds, fails or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s: not done after %v (raise --drain-timeout?)", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// modeRun is one mode of a run: its database, legacy workers, capture and
// figures. Its steps run in the order Run calls them; after a failure
// (mr.Error set) the remaining steps do nothing.
type modeRun struct {
	mode     Mode
	name     string         // the mode's name in the results: mode, or a file mode's with its protocol
	proto    WriterProtocol // file mode
	cfg      Config
	progress func(string, ...any)
	mr       ModeResult
	closers  []func()

	conn  *pgx.Conn
	meter *phaseMeter
	cp    capture
	fm    *fileMode
	lg    *legacy
	br    *broker
	nc    *nats.Conn
}

func (r *modeRun) ok() bool { return r.mr.Error == "" }

func (r *modeRun) fail(err error) {
	if err != nil && r.ok() {
		r.progress("%s: FAILED: %v", r.name, err)
		r.mr.Error = err.Error()
	}
}

func (r *modeRun) defers(f func()) { r.closers = append(r.closers, f) }

// close releases everything in reverse order.
func (r *modeRun) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

func (r *modeRun) failed() error {
	if r.cp != nil {
		return r.cp.failed()
	}
	return nil
}

// openMode creates the mode's database from the base, its capture and its
// legacy workers; name names it in the results, proto is the file mode's
// writer protocol.
func openMode(ctx context.Context, cfg Config, srv *pgServer, admin *pgx.Conn, base string, mode Mode, name string, proto WriterProtocol, progress func(string, ...any)) *modeRun {
	r := &modeRun{mode: mode, name: name, proto: proto, cfg: cfg, progress: progress, mr: ModeResult{Mode: name}}
	if mode == ModeFile {
		r.mr.WriterProtocol = proto.String()
	}
	r.fail(r.open(ctx, srv, admin, base))
	return r
}

func (r *modeRun) open(ctx context.Context, srv *pgServer, admin *pgx.Conn, base string) error {
	db := dbName(r.name)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db+" TEMPLATE "+base); err != nil {
		return fmt.Errorf("bench: creating %s from %s: %w", db, base, err)
	}
	r.defers(func() { admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)") })
	url := srv.urlFor(db)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("bench: connecting to %s: %w", db, err)
	}
	r.conn = conn
	r.defers(func() { conn.Close(context.Background()) })
	r.meter = &phaseMeter{conn: conn, pgPid: srv.pid, schemas: []string{"public", "cdc"}}
	if r.mode != ModeNone {
		if r.br, err = startBroker(); err != nil {
			return err
		}
		r.defers(r.br.stop)
		if r.nc, err = r.br.connect("ferry-bench"); err != nil {
			return err
		}
		r.defers(r.nc.Close)
	}
	var sinks []changeSink
	switch r.mode {
	case ModeCDCTable:
		r.cp = &cdcTable{url: url, poll: r.cfg.PollInterval, cleanEvy: r.cfg.CleanupInterval, nc: r.nc}
	case ModeCDCLog:
		cl := &cdcLog{binDir: srv.binDir, port: srv.port, db: db, nc: r.nc}
		r.meter.childPid = cl.pid
		r.cp = cl
		r.defers(func() {
			cl.stop()
			if err := cl.dropSlot(context.Background(), conn); err != nil {
				r.progress("%s: dropping the replication slot: %v", r.name, err)
			}
		})
	case ModeFile:
		if r.fm, err = newFileMode(r.cfg, r.br, url, r.proto); err != nil {
			return err
		}
		r.defers(r.fm.close)
		r.meter.fileSize = r.fm.fileBytes
		sinks, r.cp = r.fm.sinks(), r.fm
	}
	if r.mode == ModeCDCTable || r.mode == ModeCDCLog {
		if err := createCDCStream(ctx, r.nc); err != nil {
			return err
		}
	}
	if r.cp != nil {
		if err := r.cp.setup(ctx, conn); err != nil {
			return err
		}
		if r.fm != nil {
			r.mr.InitialChanges = r.fm.initial
		}
		r.defers(r.cp.stop)
	}
	if r.lg, err = openLegacy(ctx, url, r.cfg.Workload, sinks, r.proto, r.cfg.FileBefore); err != nil {
		return err
	}
	r.defers(r.lg.close)
	return nil
}

func (r *modeRun) legacyStatus(total time.Duration, shipping bool) func(time.Duration) string {
	lastTx := r.lg.txs.Load()
	var last time.Duration
	return func(el time.Duration) string {
		tx := r.lg.txs.Load()
		rate := float64(tx-lastTx) / (el - last).Seconds()
		lastTx, last = tx, el
		s := fmt.Sprintf("%4.0fs/%.0fs  %8.0f tx/s  %9d changes", el.Seconds(), total.Seconds(), rate, r.lg.changes.Load())
		if shipping && r.cp != nil {
			s += fmt.Sprintf("  shipped %d", r.cp.shippedChanges())
		}
		return s
	}
}

// legacySlice runs the legacy for d at rate (0: full speed) as a timed slice
// of phase p.
func (r *modeRun) legacySlice(ctx context.Context, p *Phase, label string, d time.Duration, workers int, rate float64, shipping bool, onCommit commitFunc) {
	if !r.ok() {
		return
	}
	tx0, ch0 := r.lg.txs.Load(), r.lg.changes.Load()
	st0 := r.lg.stageTimes()
	q, err := r.meter.measure(ctx, r.progress, r.name+" "+label, r.legacyStatus(d, shipping), func() (time.Time, error) {
		return time.Time{}, r.lg.run(ctx, d, workers, rate, onCommit)
	})
	if err != nil {
		r.fail(err)
		return
	}
	q.count(r.lg.txs.Load()-tx0, r.lg.changes.Load()-ch0)
	q.stages(r.lg.stageTimes(), st0)
	if err := r.failed(); err != nil {
		r.fail(err)
		return
	}
	p.add(q)
}

// drain starts shipping and measures it working off the load phase's
// backlog; the file mode then measures the receiver applying it.
func (r *modeRun) drain(ctx context.Context) {
	if !r.ok() || r.cp == nil {
		return
	}
	backlog := r.committed()
	r.progress("%s: drain phase: shipping a backlog of %d changes", r.name, backlog)
	drain, err := r.meter.measure(ctx, r.progress, r.name+" drain", func(el time.Duration) string {
		return fmt.Sprintf("%4.0fs  shipped %d of %d", el.Seconds(), r.cp.shippedChanges(), backlog)
	}, func() (time.Time, error) {
		if err := r.cp.start(ctx); err != nil {
			return time.Time{}, err
		}
		if err := waitFor(ctx, r.cfg.DrainTimeout, r.name+" drain", func() (bool, error) {
			return r.cp.shippedChanges() >= backlog, r.cp.failed()
		}); err != nil {
			return time.Time{}, err
		}
		end := time.Now()
		if s, ok := r.cp.(settler); ok {
			return end, s.settle(ctx)
		}
		return end, nil
	})
	if err != nil {
		r.fail(err)
		return
	}
	drain.count(r.lg.txs.Load(), backlog)
	r.mr.Drain = &drain
	r.progress("%s: drain: %.0f changes/s shipped", r.name, drain.ChangesPerSec)
	if r.fm == nil {
		return
	}
	r.progress("%s: apply phase: the receiver applies the backlog", r.name)
	apply, err := r.meter.measure(ctx, r.progress, r.name+" apply", func(el time.Duration) string {
		return fmt.Sprintf("%4.0fs  applied %d of %d", el.Seconds(), r.fm.appliedChanges(), backlog)
	}, func() (time.Time, error) {
		if err := r.fm.startReceiver(ctx); err != nil {
			return time.Time{}, err
		}
		// Up to the files' end, outcomes included: a change count
		// cannot tell, as the row guard skips a change older than the
		// row it would overwrite.
		return time.Time{}, r.fm.settle(ctx, r.cfg.DrainTimeout)
	})
	if err != nil {
		r.fail(err)
		return
	}
	apply.count(r.lg.txs.Load(), backlog)
	r.mr.Apply = &apply
	r.checkState(ctx, "apply")
	r.fm.stopReceiver()
	r.progress("%s: apply: %.0f changes/s applied", r.name, apply.ChangesPerSec)
}

// committed returns the changes the legacy committed so far, with the file
// mode's initial load (its change files start with the initial rows, so that
// the receiver can hold the database's state).
func (r *modeRun) committed() int64 {
	n := r.lg.changes.Load()
	if r.fm != nil {
		n += r.fm.initial
	}
	return n
}

func (r *modeRun) caughtUp(ctx context.Context, what string) error {
	want := r.committed()
	return waitFor(ctx, r.cfg.DrainTimeout, r.name+" "+what, func() (bool, error) {
		ok := r.cp.shippedChanges() >= want
		if r.fm != nil && r.fm.receiving() {
			ok = ok && r.fm.receiverCaughtUp()
		}
		return ok, r.failed()
	})
}

// shipping runs the phases with shipping on: concurrent (full speed) and
// paced (latency), then counts what went over the wire and stops shipping.
// base, if not nil, is the none mode: the concurrent phase alternates its
// rounds with base's, so that the overhead with shipping on is measured
// against a baseline taken at the same time.
func (r *modeRun) shipping(ctx context.Context, base *modeRun) {
	if !r.ok() || r.cp == nil {
		return
	}
	d := r.cfg.PhaseDuration
	rounds := r.cfg.Rounds
	slice := d / time.Duration(rounds)
	r.progress("%s: concurrent phase: %v at full speed, shipping on, in %d rounds alternating with none", r.name, d, rounds)
	var conc, baseline Phase
	for round := 0; round < rounds && r.ok(); round++ {
		label := fmt.Sprintf("concurrent %d/%d", round+1, rounds)
		if base != nil && base.ok() {
			base.legacySlice(ctx, &baseline, label+" (baseline for "+r.name+")", slice, r.cfg.Workers, 0, false, nil)
		}
		r.legacySlice(ctx, &conc, label, slice, r.cfg.Workers, 0, true, nil)
		if r.ok() {
			r.fail(r.caughtUp(ctx, "catching up after a concurrent round"))
		}
	}
	if !r.ok() {
		return
	}
	r.mr.Concurrent = &conc
	if baseline.Txs > 0 {
		r.mr.ConcurrentBaseline = &baseline
	}
	r.progress("%s: concurrent: %.0f tx/s, %.0f changes/s (none meanwhile: %.0f tx/s)", r.name, conc.TxPerSec, conc.ChangesPerSec, baseline.TxPerSec)

	lat := newLatencies()
	var latRecv *latencies
	stopApplied := func() error { return nil }
	if r.fm != nil {
		if err := r.fm.startReceiver(ctx); err != nil {
			r.fail(err)
			return
		}
		if err := r.caughtUp(ctx, "receiver catching up before the paced phase"); err != nil {
			r.fail(err)
			return
		}
		latRecv = newLatencies()
		stopApplied = r.fm.watchApplied(latRecv)
	}
	stopWatch, err := watch(ctx, r.nc, r.mode, lat)
	if err != nil {
		r.fail(err)
		return
	}
	onCommit := func(v, txid, ns int64) {
		if r.fm != nil {
			v = txid // what the file mode's frames carry (Tx.ID)
		}
		lat.commit(v, ns)
		if latRecv != nil {
			latRecv.commit(v, ns)
		}
	}
	r.progress("%s: paced phase: %v at %.0f changes/s with %d workers, shipping on, latency measured", r.name, d, r.cfg.LatencyRate, r.cfg.PacedWorkers)
	var paced Phase
	r.legacySlice(ctx, &paced, "paced", d, r.cfg.PacedWorkers, r.cfg.LatencyRate, true, onCommit)
	if r.ok() {
		r.fail(r.caughtUp(ctx, "catching up after the paced phase"))
		time.Sleep(100 * time.Millisecond) // the watcher sees the stream a little after the acks
	}
	stopWatch()
	r.fail(stopApplied())
	if !r.ok() {
		return
	}
	r.checkState(ctx, "paced")
	r.mr.Paced = &paced
	l := lat.summary()
	r.mr.LatencyJS = &l
	r.progress("%s: paced: %.0f changes/s; commit to JetStream p50 %.2f ms, p99 %.2f ms (%d samples)", r.name, paced.ChangesPerSec, l.P50, l.P99, l.Samples)
	if r.fm != nil {
		rl := latRecv.summary()
		r.mr.LatencyReceiver = &rl
		r.progress("%s: commit to applied p50 %.2f ms, p99 %.2f ms (%d samples)", r.name, rl.P50, rl.P99, rl.Samples)
	}
	// Every change the legacy committed arrived, once.
	if got, want := r.cp.shippedChanges(), r.committed(); got != want {
		r.fail(fmt.Errorf("bench: %s shipped %d changes, the legacy committed %d: lost or doubled", r.name, got, want))
		return
	}
	// (What the receiver holds, the state check compared; it applies
	// fewer changes than committed when it skips older ones.)
	if r.fm != nil {
		if got, want := r.fm.appliedChanges(), r.committed(); got > want {
			r.fail(fmt.Errorf("bench: the receiver applied %d changes, the legacy committed %d: doubled", got, want))
			return
		}
	}
	r.cp.stop()
	ws, err := countStream(ctx, r.nc, streamOf(r.mode))
	if err != nil {
		r.fail(err)
		return
	}
	r.mr.WireMessages, r.mr.WireBytes, r.mr.RawBytes = ws.Messages, ws.Bytes, ws.Raw
	if r.fm != nil {
		oc, err := checkOrder(r.fm.dir)
		if err != nil {
			r.fail(err)
			return
		}
		r.mr.OrderCheck = &oc
		r.progress("%s: order check: %d of %d transaction frames out of the database's commit order", r.name, oc.OutOfOrder, oc.Frames)
	}
}

// checkState compares the receiver's rows with the mode's database once the
// receiver applied everything in the files (the legacy is idle), after
// phase. A difference does not stop the mode (its figures are still
// measured); Run fails on it.
func (r *modeRun) checkState(ctx context.Context, phase string) {
	if !r.ok() || r.fm == nil || !r.fm.receiving() {
		return
	}
	if err := r.fm.settle(ctx, r.cfg.DrainTimeout); err != nil {
		r.fail(err)
		return
	}
	c, err := compareState(ctx, r.conn, r.fm.rcv.Store())
	if err != nil {
		r.fail(err)
		return
	}
	if r.mr.StateCheck == nil {
		r.mr.StateCheck = &StateCheck{}
	}
	r.mr.StateCheck.add(c)
	r.progress("%s: state check after the %s phase: %d rows compared, %d differ", r.name, phase, c.Rows, c.Differ)
	for _, e := range c.Examples {
		r.progress("%s:   %s", r.name, e)
	}
}

func streamOf(mode Mode) string {
	if mode == ModeFile {
		return fileStream
	}
	return cdcStream
}
