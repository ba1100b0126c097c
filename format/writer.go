package format

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SyncPolicy says when a Writer makes committed transactions durable.
type SyncPolicy int

const (
	// SyncNone leaves flushing to the operating system: a transaction
	// reaches the file within microseconds of Commit (so it survives the
	// application crashing soon after) but survives a power loss only once
	// the kernel writes it back.
	SyncNone SyncPolicy = iota
	// SyncInterval fsyncs the segment every interval (default 100 ms):
	// a power loss loses at most that much. Commit never waits for the disk.
	SyncInterval
	// SyncAlways returns from Commit only once its frame is fsynced.
	// Concurrent commits share one fsync (group commit).
	SyncAlways
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncNone:
		return "none"
	case SyncInterval:
		return "interval"
	case SyncAlways:
		return "always"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// ParseSyncPolicy parses "none", "interval" or "always".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "none":
		return SyncNone, nil
	case "interval":
		return SyncInterval, nil
	case "always":
		return SyncAlways, nil
	}
	return 0, fmt.Errorf("format: unknown sync policy %q (want none, interval or always)", s)
}

// Writer defaults.
const (
	DefaultSyncInterval   = 100 * time.Millisecond
	DefaultMaxSegmentSize = 64 << 20
	DefaultMaxSegmentAge  = 10 * time.Minute
	DefaultHeartbeat      = time.Second
	DefaultMaxPending     = 8 << 20
)

type writerOptions struct {
	sync         SyncPolicy
	syncInterval time.Duration
	maxSize      int64
	maxAge       time.Duration
	heartbeat    time.Duration
	maxPending   int
	resolver     Resolver
	prealloc     preallocMode
	now          func() time.Time
}

// preallocMode is WithPreallocate's setting; the zero value is the default.
type preallocMode int8

const (
	preallocDefault preallocMode = iota
	preallocOn
	preallocOff
)

// WriterOption configures a Writer.
type WriterOption func(*writerOptions) error

// WithSync sets the sync policy; interval matters for SyncInterval only
// (0 means DefaultSyncInterval).
func WithSync(p SyncPolicy, interval time.Duration) WriterOption {
	return func(o *writerOptions) error {
		if p < SyncNone || p > SyncAlways {
			return fmt.Errorf("format: invalid sync policy %d", p)
		}
		if interval < 0 {
			return fmt.Errorf("format: negative sync interval %v", interval)
		}
		o.sync = p
		if interval > 0 {
			o.syncInterval = interval
		}
		return nil
	}
}

// WithPreallocate sets whether each new segment's space is reserved up to
// the size limit when the segment is created (fallocate on Linux; the space
// reads as zeros, SPEC.md "Writers", step 3), and cut back to its frames
// when it is sealed. An fsync of frames written into reserved space changes
// neither the file's size nor its block map, so the file system commits no
// journal transaction for it: on ext4 it takes about a third less CPU and
// time than an fsync of appended bytes. The default is on under SyncAlways,
// where every commit waits for an fsync, and off under the other policies;
// where the file system cannot reserve space, segments grow as written.
func WithPreallocate(on bool) WriterOption {
	return func(o *writerOptions) error {
		o.prealloc = preallocOff
		if on {
			o.prealloc = preallocOn
		}
		return nil
	}
}

// preallocates reports whether new segments are preallocated.
func (o *writerOptions) preallocates() bool {
	if o.prealloc == preallocDefault {
		return o.sync == SyncAlways
	}
	return o.prealloc == preallocOn
}

// WithMaxSegmentSize rotates to a new segment once one holds n bytes.
func WithMaxSegmentSize(n int64) WriterOption {
	return func(o *writerOptions) error {
		if n < 4096 {
			return fmt.Errorf("format: max segment size %d below 4096", n)
		}
		o.maxSize = n
		return nil
	}
}

// WithMaxSegmentAge rotates to a new segment once one is older than d and
// holds at least one frame; 0 disables rotation by age.
func WithMaxSegmentAge(d time.Duration) WriterOption {
	return func(o *writerOptions) error {
		if d < 0 {
			return fmt.Errorf("format: negative max segment age %v", d)
		}
		o.maxAge = d
		return nil
	}
}

// WithHeartbeat writes a heartbeat frame when nothing was committed for d,
// so that readers can tell an idle source from a dead one; 0 disables it.
func WithHeartbeat(d time.Duration) WriterOption {
	return func(o *writerOptions) error {
		if d < 0 {
			return fmt.Errorf("format: negative heartbeat interval %v", d)
		}
		o.heartbeat = d
		return nil
	}
}

// WithMaxPending bounds the bytes committed but not yet written to the file;
// Commit waits while more are pending (the disk is slower than the app).
func WithMaxPending(n int) WriterOption {
	return func(o *writerOptions) error {
		if n < 4096 {
			return fmt.Errorf("format: max pending %d below 4096", n)
		}
		o.maxPending = n
		return nil
	}
}

// Writer appends transactions to a source's segments. It is safe for
// concurrent use. Each transaction is encoded into one frame that reaches the
// file in one write (frames are never split across writes), by a background
// flusher that batches whatever is committed while it writes; the sync policy
// decides when Commit waits for the disk.
//
// Two ways to append a transaction (SPEC.md, "Commit order"):
//   - Prepare, before the database's COMMIT while the transaction still
//     holds its locks, then Prepared.Commit or Abort once COMMIT returned:
//     frames of transactions that touch the same row reach the file in the
//     database's commit order, and under SyncAlways the fsync overlaps the
//     COMMIT instead of following it;
//   - Commit, after the database's COMMIT (or for a legacy without a
//     database): simpler, but concurrent transactions on the same rows may
//     reach the file out of the database's order.
//
// Writes and fsyncs do not wait for each other: a transaction is written
// while an fsync of earlier ones runs, and one fsync covers every frame
// written before it started (group commit).
//
// Rotation does not stall commits: when a segment is full, Commit appends
// the seal and carries on in the next segment's buffer at once; the next
// write creates the next segment, and the sealed one is fsynced and closed
// by the next fsync, before anything of the next segment counts as synced.
//
// A Writer holds an exclusive lock on its source in its directory. When it
// opens it starts a new segment after the highest one present, so a writer
// restarted after a crash never appends to a segment it may have torn, and
// it looks for prepared transactions of the previous writer whose outcome
// is not in the files (InDoubt).
type Writer struct {
	dir, source string
	opts        writerOptions
	lock        *os.File
	hdrLen      int64 // size of this source's segment headers

	mu        sync.Mutex
	cond      *sync.Cond // signalled when written/synced advance, tail is taken or err is set
	buf       []byte     // committed frames not yet handed to the flusher (see tail)
	spare     []byte
	tail      *sealedTail // set when buf starts with a sealed segment's last bytes
	seg       uint64      // the segment commits go to
	segBorn   time.Time
	size      int64 // logical size of segment seg, pending bytes included
	txs, chs  uint64
	appended  int64     // bytes committed since open, all segments, headers excluded
	written   int64     // of which handed to the OS
	synced    int64     // of which fsynced
	lastWrite time.Time // last time the flusher saw appended advance
	lastSeen  int64     // appended as of lastWrite
	lastSync  time.Time
	closed    bool
	err       error // sticky I/O error
	// Prepared transactions: inflight were prepared by this Writer and
	// are not resolved yet; inDoubt were found unresolved in the files at
	// open; outcomes are resolutions not yet encoded into buf.
	inflight map[Position]struct{}
	inDoubt  map[Position]*Tx
	outcomes []Resolution
	sealed   []*os.File // sealed segments written whole, fsynced and closed by the next sync
	// needSync is the end (in appended bytes) of the last frame whose
	// caller waits for it to be durable (SyncAlways): the flusher fsyncs
	// only when synced is behind it, so outcomes and heartbeats ride on
	// the next fsync instead of costing one of their own.
	needSync int64
	// syncing lists the fsyncs in flight, oldest first. Up to
	// maxSyncsInFlight run at once, so that a frame written while an
	// fsync runs starts its own at once instead of waiting for it;
	// synced advances over them in order.
	syncing []*syncOp

	ioMu sync.Mutex // serialises writes and segment creation; taken before mu, never while holding it
	f    *os.File   // the segment file being written; ioMu
	fOff int64      // where f's frames end: the next write's offset; ioMu
	fPre bool       // f's space is preallocated past fOff (to cut before its seal); ioMu

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// sealedTail marks a segment that Commit sealed: the first n pending bytes
// are its last frames, seal included, and the rest belong to segment next.
// The flusher writes them and creates segment next, whose header carries
// lowWatermark.
type sealedTail struct {
	n            int
	next         uint64
	created      time.Time
	lowWatermark Position
}

// OpenWriter opens a Writer for source in dir, creating dir if needed.
func OpenWriter(dir, source string, opts ...WriterOption) (*Writer, error) {
	o := writerOptions{
		sync:         SyncInterval,
		syncInterval: DefaultSyncInterval,
		maxSize:      DefaultMaxSegmentSize,
		maxAge:       DefaultMaxSegmentAge,
		heartbeat:    DefaultHeartbeat,
		maxPending:   DefaultMaxPending,
		now:          time.Now,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := CheckSource(source); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("format: creating segment directory: %w", err)
	}
	lock, err := lockSource(dir, source)
	if err != nil {
		return nil, err
	}
	segs, err := ListSegments(dir, source)
	if err != nil {
		lock.Close()
		return nil, err
	}
	w := &Writer{dir: dir, source: source, opts: o, lock: lock, hdrLen: int64(HeaderLen(Version, source)),
		seg: 1, kick: make(chan struct{}, 1), done: make(chan struct{}),
		inflight: make(map[Position]struct{})}
	if len(segs) > 0 {
		w.seg = segs[len(segs)-1].Segment + 1
	}
	// The lock file remembers the last segment created, so that a directory
	// whose shipped segments were all deleted or archived does not restart
	// the chain at 1: receivers would take the new segments for old ones.
	last, err := readLastSegment(lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if last >= w.seg {
		w.seg = last + 1
	}
	if w.inDoubt, err = findInDoubt(segs); err != nil {
		lock.Close()
		return nil, err
	}
	w.cond = sync.NewCond(&w.mu)
	// The new segment's low watermark covers every in-doubt transaction,
	// also those the resolver settles below: their outcomes are in no file
	// until they are written.
	lw := w.lowWatermarkLocked()
	if o.resolver != nil {
		w.resolveInDoubt(o.resolver)
	}
	now := o.now()
	f, pre, err := w.createSegment(w.seg, now, lw)
	if err != nil {
		lock.Close()
		return nil, err
	}
	w.f, w.fOff, w.fPre, w.size, w.segBorn = f, w.hdrLen, pre, w.hdrLen, now
	w.lastWrite, w.lastSync = now, now
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.flushLoop(ctx)
	if len(w.outcomes) > 0 {
		w.wake()
	}
	return w, nil
}

func lockSource(dir, source string) (*os.File, error) {
	path := filepath.Join(dir, source+".lock")
	// Never through a link: the lock file is rewritten and truncated.
	f, err := OpenRegular(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("format: opening lock file: %w", err)
	}
	// Both lock kinds, so that writers in other languages exclude us with
	// whichever they have (SPEC.md, "Lock file"): flock (C, Python, Go)
	// and a POSIX record lock over the whole file (Java's
	// FileChannel.tryLock); on Linux the two do not see each other. (POSIX
	// semantics: a failed second OpenWriter of the same source in this
	// process, closing its descriptor, drops the first one's record lock;
	// its flock stays.)
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		err = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0})
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: source %q in %s (lock file %s): %w; stop the other writer first", ErrLocked, source, dir, path, err)
	}
	return f, nil
}

// createSegment creates segment seg, writes its header, preallocates its
// space if the writer does (pre: then it is cut before the seal), fsyncs them and
// the directory entry, and returns the file, to be written at the header's
// end on.
func (w *Writer) createSegment(seg uint64, created time.Time, lw Position) (f *os.File, pre bool, err error) {
	hdr, err := AppendHeader(nil, SegmentHeader{Source: w.source, Segment: seg, Created: created.UnixNano(), LowWatermark: lw})
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(w.dir, SegmentName(w.source, seg))
	// Positioned writes, not O_APPEND: frames go at the end of the last
	// frame, which is before the end of a preallocated file.
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("format: creating segment: %w", err)
	}
	if _, err := f.Write(hdr); err != nil {
		return nil, false, w.abandonSegment(f, path, fmt.Errorf("format: writing segment header to %s: %w", path, err))
	}
	// Without the space (a file system that cannot reserve it, or too
	// little free space for a whole segment) the segment grows as written.
	// It is cut before its seal all the same: a failed fallocate may have
	// reserved part of the space.
	if pre = w.opts.preallocates(); pre {
		_ = preallocate(f, max(w.opts.maxSize, int64(len(hdr))))
	}
	if err := f.Sync(); err != nil {
		return nil, false, w.abandonSegment(f, path, fmt.Errorf("format: syncing %s: %w", path, err))
	}
	if err := syncDir(w.dir); err != nil {
		f.Close()
		return nil, false, err
	}
	// Recorded only once the segment exists: a crash in between leaves the
	// record one behind, which the directory listing makes up for; recorded
	// first, it would leave a gap in the chain.
	if err := recordLastSegment(w.lock, seg); err != nil {
		f.Close()
		return nil, false, err
	}
	return f, pre, nil
}

// abandonSegment removes a segment whose header could not be written or
// synced (a full disk, an I/O error) and returns err: nothing was ever in it,
// and left behind it would hold a torn header that the next writer's
// segment follows. Removed, the next attempt creates the same number again.
// If the removal fails too, readers move past the torn header (SPEC.md,
// "Readers", step 4).
func (w *Writer) abandonSegment(f *os.File, path string, err error) error {
	f.Close()
	if rerr := os.Remove(path); rerr != nil {
		return fmt.Errorf("%w (and removing the unfinished segment failed: %v)", err, rerr)
	}
	_ = syncDir(w.dir) // best effort: a resurrected empty file is handled too
	return err
}

// readLastSegment reads the number of the last segment created from the
// lock file: decimal text, empty before the first segment (SPEC.md, "Lock
// file").
func readLastSegment(lock *os.File) (uint64, error) {
	b := make([]byte, 32)
	n, err := lock.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return 0, fmt.Errorf("format: reading lock file %s: %w", lock.Name(), err)
	}
	text := strings.TrimSpace(string(b[:n]))
	if text == "" {
		return 0, nil
	}
	last, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: lock file %s holds %q, want the last segment number; fix or empty it", ErrCorrupt, lock.Name(), text)
	}
	return last, nil
}

func recordLastSegment(lock *os.File, seg uint64) error {
	text := strconv.FormatUint(seg, 10) + "\n"
	if _, err := lock.WriteAt([]byte(text), 0); err != nil {
		return fmt.Errorf("format: recording segment %d in lock file %s: %w", seg, lock.Name(), err)
	}
	if err := lock.Truncate(int64(len(text))); err != nil {
		return fmt.Errorf("format: recording segment %d in lock file %s: %w", seg, lock.Name(), err)
	}
	if err := lock.Sync(); err != nil {
		return fmt.Errorf("format: syncing lock file %s: %w", lock.Name(), err)
	}
	return nil
}

// syncDir makes a new directory entry durable: without it a power cut can
// lose a file that was fsynced itself (Beats #3537).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("format: opening directory to sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("format: syncing directory %s: %w", dir, err)
	}
	return nil
}

// Commit appends tx as one committed frame and returns its position: the
// after-commit path, for a transaction the database already committed (see
// Prepare for the order-preserving one). Depending on the sync policy it
// returns once the frame is buffered or once it is fsynced. An invalid tx is
// refused whole with an error wrapping ErrInvalid or ErrTooLarge; an I/O
// error is sticky: every later Commit returns it.
func (w *Writer) Commit(tx *Tx) (Position, error) {
	if tx.Prepared {
		return Position{}, fmt.Errorf("%w: Commit of a transaction marked Prepared (use Writer.Prepare)", ErrInvalid)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	pos, end, err := w.appendLocked(tx, false)
	if err != nil {
		return Position{}, err
	}
	return pos, w.waitSyncedLocked(end)
}

// appendLocked encodes tx at the end of the pending bytes, rotating if the
// segment is full, and returns its position and the end of its frame in
// appended bytes. selfWrite says the caller writes the bytes itself
// (appendedLocked). mu is held.
func (w *Writer) appendLocked(tx *Tx, selfWrite bool) (Position, int64, error) {
	pos, before, err := w.reserveLocked()
	if err != nil {
		return Position{}, 0, err
	}
	buf, err := AppendTx(w.buf, tx)
	if err != nil {
		return Position{}, 0, err
	}
	w.buf = buf
	w.txs++
	w.chs += uint64(len(tx.Changes))
	return pos, w.appendedLocked(before, selfWrite), nil
}

// appendFrameLocked is appendLocked for a frame that is not a transaction
// (it counts in no seal count).
func (w *Writer) appendFrameLocked(encode func([]byte) ([]byte, error)) (Position, int64, error) {
	pos, before, err := w.reserveLocked()
	if err != nil {
		return Position{}, 0, err
	}
	buf, err := encode(w.buf)
	if err != nil {
		return Position{}, 0, err
	}
	w.buf = buf
	return pos, w.appendedLocked(before, false), nil
}

// reserveLocked waits until the pending bytes leave room and returns where
// the next frame goes and the pending length before it. mu is held.
func (w *Writer) reserveLocked() (Position, int, error) {
	if err := w.usable(); err != nil {
		return Position{}, 0, err
	}
	for len(w.buf) >= w.opts.maxPending && w.err == nil && !w.closed {
		w.cond.Wait()
	}
	if err := w.usable(); err != nil {
		return Position{}, 0, err
	}
	return Position{Segment: w.seg, Offset: w.size}, len(w.buf), nil
}

// appendedLocked accounts for the frame appended to buf after before bytes,
// rotates if the segment is full, wakes the flusher and returns the frame's
// end in appended bytes. If selfWrite, the caller writes the pending bytes
// at once (Prepare): the flusher is woken only for a rotation, for woken
// it would only race the caller for ioMu (a futex sleep and wake-up per
// transaction) to write the same bytes. mu is held.
func (w *Writer) appendedLocked(before int, selfWrite bool) int64 {
	n := int64(len(w.buf) - before)
	w.size += n
	w.appended += n
	end := w.appended
	wake := before == 0 && !selfWrite
	// Rotate once full. A previous rotation the flusher has not taken up
	// yet must go first (rare: a whole segment committed meanwhile).
	for w.size >= w.opts.maxSize && w.err == nil && !w.closed {
		if w.tail == nil {
			w.sealLocked(w.opts.now())
			wake = true
			break
		}
		w.cond.Wait()
	}
	if wake {
		// Wake the flusher only when the buffer stops being empty (or a
		// segment was sealed): until it takes the buffer, later commits
		// ride on this wake-up, so a busy writer costs one wake-up per
		// flush, not one per commit.
		w.wake()
	}
	return end
}

// waitSyncedLocked waits, under SyncAlways, until the bytes up to end are
// fsynced. mu is held.
func (w *Writer) waitSyncedLocked(end int64) error {
	if w.opts.sync != SyncAlways {
		return nil
	}
	w.needSync = max(w.needSync, end)
	for w.synced < end && w.err == nil {
		w.cond.Wait()
	}
	if w.synced < end {
		return w.err
	}
	return nil
}

func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// sealLocked ends segment seg: it appends the seal to the pending bytes,
// marks them as the segment's tail for the flusher and moves commits on to
// the next segment, whose file the flusher creates. mu is held and tail is
// nil.
func (w *Writer) sealLocked(now time.Time) {
	b := AppendSeal(w.buf, Seal{Next: w.seg + 1, Transactions: w.txs, Changes: w.chs, Time: now.UnixNano()})
	w.appended += int64(len(b) - len(w.buf))
	w.buf = b
	w.tail = &sealedTail{n: len(b), next: w.seg + 1, created: now, lowWatermark: w.lowWatermarkLocked()}
	w.seg++
	w.size, w.segBorn, w.txs, w.chs = w.hdrLen, now, 0, 0
}

func (w *Writer) usable() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	return nil
}

// Segment returns the number of the segment commits go to.
func (w *Writer) Segment() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seg
}

// Sync writes everything committed so far and fsyncs it.
func (w *Writer) Sync() error {
	w.mu.Lock()
	err := w.usable()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	return w.flush(true)
}

// Rotate seals the current segment and starts the next one; on return the
// next segment's file exists.
func (w *Writer) Rotate() error {
	w.mu.Lock()
	for w.tail != nil && w.err == nil && !w.closed {
		w.cond.Wait()
	}
	if err := w.usable(); err != nil {
		w.mu.Unlock()
		return err
	}
	w.sealLocked(w.opts.now())
	w.mu.Unlock()
	return w.flush(false)
}

// Close writes what is pending, seals the segment (naming the next one, which
// a restarted writer creates), fsyncs and releases the source. Prepared
// transactions still unresolved stay in doubt: the next Writer of the source
// finds them (InDoubt).
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.cancel()
	<-w.done

	w.mu.Lock()
	if w.err == nil {
		w.encodeOutcomesLocked()
		b := AppendSeal(w.buf, Seal{Next: w.seg + 1, Transactions: w.txs, Changes: w.chs, Time: w.opts.now().UnixNano()})
		w.appended += int64(len(b) - len(w.buf))
		w.buf = b
	}
	w.mu.Unlock()
	err := w.flush(true)

	// Holding ioMu, no fsync can start; wait for those in flight, which
	// need only mu to finish, before closing their files.
	w.ioMu.Lock()
	w.mu.Lock()
	for len(w.syncing) > 0 {
		w.cond.Wait()
	}
	sealed := w.sealed
	w.sealed = nil
	w.mu.Unlock()
	for _, f := range sealed {
		f.Close() // only after an error: a successful sync closed them
	}
	if w.f != nil {
		if cerr := w.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("format: closing segment: %w", cerr)
		}
		w.f = nil
	}
	w.ioMu.Unlock()
	w.lock.Close()
	return err
}

// flush writes everything committed so far to the files, then fsyncs it if
// sync, or under SyncAlways if a caller waits for bytes not yet durable
// (needSync). Commits go on meanwhile: mu is held only to take the bytes
// and to record the outcome. It returns the writer's sticky error, if any.
func (w *Writer) flush(sync bool) error {
	if err := w.write(); err != nil {
		return err
	}
	w.mu.Lock()
	end := w.written
	need := sync || (w.opts.sync == SyncAlways && w.synced < w.needSync)
	w.mu.Unlock()
	if !need {
		return nil
	}
	return w.syncTo(end)
}

// write hands the pending bytes to the OS: first the tail of a sealed
// segment, then (creating the next segment) the rest. Outcomes recorded
// since the last write are encoded first, so that they follow the frames
// they resolve.
func (w *Writer) write() error {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	w.mu.Lock()
	if w.err == nil && !w.closed {
		w.encodeOutcomesLocked()
	}
	if w.err != nil || (len(w.buf) == 0 && w.tail == nil) {
		err := w.err
		w.mu.Unlock()
		return err
	}
	tail, b, end := w.tail, w.buf, w.appended
	// Once closed, the pending bytes end with the last segment's seal.
	sealing := w.closed
	w.tail, w.buf, w.spare = nil, w.spare[:0], nil
	if tail != nil {
		w.cond.Broadcast() // a commit may wait to seal the next segment
	}
	w.mu.Unlock()

	err := w.writeOut(tail, b, sealing)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.spare = b[:0]
	if err != nil {
		return w.setErr(err)
	}
	w.written = max(w.written, end)
	w.cond.Broadcast()
	return nil
}

// writeTo makes sure the bytes up to end (in appended bytes) are written.
func (w *Writer) writeTo(end int64) error {
	w.mu.Lock()
	done, err := w.written >= end, w.err
	w.mu.Unlock()
	if err != nil || done {
		return err
	}
	return w.write()
}

// writeOut does write's I/O; ioMu is held. The sealed segment's file joins
// the ones the next sync fsyncs and closes, so that a rotation does not hold
// up commits for the time a large fsync takes. sealing says that b ends with
// the seal of the segment it ends in (Close).
func (w *Writer) writeOut(tail *sealedTail, b []byte, sealing bool) error {
	if tail != nil {
		seg := tail.next - 1
		if err := w.cutPrealloc(seg); err != nil {
			return err
		}
		if err := w.writeFile(b[:tail.n], seg); err != nil {
			return err
		}
		w.mu.Lock()
		w.sealed = append(w.sealed, w.f)
		w.mu.Unlock()
		w.f = nil
		f, pre, err := w.createSegment(tail.next, tail.created, tail.lowWatermark)
		if err != nil {
			return err
		}
		w.f, w.fOff, w.fPre = f, w.hdrLen, pre
		b = b[tail.n:]
	}
	if sealing {
		if err := w.cutPrealloc(w.segOf(tail)); err != nil {
			return err
		}
	}
	if len(b) > 0 {
		return w.writeFile(b, w.segOf(tail))
	}
	return nil
}

// writeFile writes b at the end of f's frames; ioMu is held.
func (w *Writer) writeFile(b []byte, seg uint64) error {
	n, err := w.f.WriteAt(b, w.fOff)
	w.fOff += int64(n)
	if err != nil {
		return fmt.Errorf("format: writing segment %d: %w", seg, err)
	}
	return nil
}

// cutPrealloc truncates f's preallocated space after its frames, before its
// seal is written: a sealed segment ends with its seal (SPEC.md, "Writers",
// step 3). ioMu is held.
func (w *Writer) cutPrealloc(seg uint64) error {
	if !w.fPre {
		return nil
	}
	if err := w.f.Truncate(w.fOff); err != nil {
		return fmt.Errorf("format: cutting segment %d's preallocated space before its seal: %w", seg, err)
	}
	w.fPre = false
	return nil
}

// syncOp is one fsync in flight: it makes the bytes up to target durable.
type syncOp struct {
	target int64
	done   bool
	err    error
}

// maxSyncsInFlight bounds the fsyncs running at once. Two let a frame
// written during an fsync start its own without waiting for the first to
// end (the second includes every byte the first does not); more would only
// queue in the filesystem.
const maxSyncsInFlight = 2

// syncTo fsyncs until everything written up to end (in appended bytes) is
// durable: sealed segments first (then closed), then the current one. A
// caller whose bytes an fsync in flight already covers waits for it, so
// concurrent callers share fsyncs; writes go on meanwhile. synced advances
// only over fsyncs that ended in order: a later fsync that ends first does
// not vouch for the sealed files an earlier one is still syncing.
func (w *Writer) syncTo(end int64) error {
	w.mu.Lock()
	for {
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
		if w.synced >= end {
			w.mu.Unlock()
			return nil
		}
		if !w.syncCoversLocked(end) && len(w.syncing) < maxSyncsInFlight {
			break
		}
		w.cond.Wait()
	}
	w.mu.Unlock()
	// No write runs while ioMu is held, so target counts exactly the bytes
	// in the sealed files and f.
	w.ioMu.Lock()
	w.mu.Lock()
	if w.err != nil || w.synced >= end || w.syncCoversLocked(end) || len(w.syncing) >= maxSyncsInFlight {
		// Another caller started a covering fsync meanwhile: wait for it.
		w.mu.Unlock()
		w.ioMu.Unlock()
		return w.syncTo(end)
	}
	op := &syncOp{target: w.written}
	sealed, f := w.sealed, w.f
	w.sealed = nil
	w.syncing = append(w.syncing, op)
	w.mu.Unlock()
	w.ioMu.Unlock()

	var err error
	for _, s := range sealed {
		if err == nil {
			if serr := syncData(s); serr != nil {
				err = fmt.Errorf("format: syncing sealed segment %s: %w", s.Name(), serr)
			}
		}
		if cerr := s.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("format: closing sealed segment %s: %w", s.Name(), cerr)
		}
	}
	if err == nil && f != nil {
		if serr := syncData(f); serr != nil {
			err = fmt.Errorf("format: syncing segment %s: %w", f.Name(), serr)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	op.done, op.err = true, err
	for len(w.syncing) > 0 && w.syncing[0].done {
		o := w.syncing[0]
		w.syncing = w.syncing[1:]
		if o.err != nil {
			w.setErr(o.err)
			continue
		}
		w.synced = max(w.synced, o.target)
		w.lastSync = w.opts.now()
	}
	w.cond.Broadcast()
	for w.synced < end && w.err == nil {
		w.cond.Wait() // an earlier fsync is still running
	}
	if w.synced < end {
		return w.err
	}
	return nil
}

// syncCoversLocked reports whether an fsync in flight makes end durable.
// mu is held.
func (w *Writer) syncCoversLocked(end int64) bool {
	for _, op := range w.syncing {
		if op.target >= end {
			return true
		}
	}
	return false
}

// segOf names the segment being written for errors.
func (w *Writer) segOf(tail *sealedTail) uint64 {
	if tail != nil {
		return tail.next
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seg
}

func (w *Writer) setErr(err error) error {
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
	return w.err
}

func (w *Writer) flushLoop(ctx context.Context) {
	defer close(w.done)
	tick := time.Second
	for _, d := range []time.Duration{w.opts.heartbeat, w.opts.maxAge} {
		if d > 0 && d < tick {
			tick = d
		}
	}
	if w.opts.sync == SyncInterval && w.opts.syncInterval < tick {
		tick = w.opts.syncInterval
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
			w.flush(false)
		case <-ticker.C:
			w.tick()
		}
	}
}

// tick rotates an old segment, writes a heartbeat when idle and syncs under
// SyncInterval.
func (w *Writer) tick() {
	w.mu.Lock()
	now := w.opts.now()
	if w.err != nil || w.closed {
		w.mu.Unlock()
		return
	}
	if w.opts.maxAge > 0 && now.Sub(w.segBorn) >= w.opts.maxAge && w.txs > 0 && w.tail == nil {
		w.sealLocked(now)
	}
	if w.appended != w.lastSeen {
		// Commits do not read the clock (it costs more than encoding a
		// small change): activity is noticed here, to a tick's precision.
		w.lastSeen, w.lastWrite = w.appended, now
	}
	if w.opts.heartbeat > 0 && now.Sub(w.lastWrite) >= w.opts.heartbeat {
		w.buf = AppendHeartbeat(w.buf, now.UnixNano())
		n := int64(FrameHeaderLen + 8)
		w.size += n
		w.appended += n
		w.lastWrite, w.lastSeen = now, w.appended
	}
	sync := w.opts.sync == SyncInterval && now.Sub(w.lastSync) >= w.opts.syncInterval && w.synced < w.appended
	w.mu.Unlock()
	w.flush(sync)
}

// ErrLocked is wrapped by OpenWriter when another writer holds the source.
var ErrLocked = errors.New("format: source locked by another writer")
