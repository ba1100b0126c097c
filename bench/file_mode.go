package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ferrysync/ferry/bench/pg"
	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// The file mode is Ferry: the legacy application commits each transaction
// to its change files with format.Writer right after its database commit
// (the same code path, so a transaction reaches the files only once the
// database has it), and the shipper and receiver libraries, embedded, carry
// the files through JetStream into a Pebble store.

const (
	fileStream = "FERRY"
	fileSource = "legacy"
)

// writerSync returns the change-file sync policy whose durability matches
// the database's: with synchronous_commit=on a commit is on disk when it
// returns, so the writer's Commit waits for its fsync too (SyncAlways,
// group commit); with synchronous_commit=off PostgreSQL's WAL writer
// fsyncs every wal_writer_delay (100 ms), and so does the writer
// (SyncInterval).
func writerSync(d pg.Durability) format.SyncPolicy {
	if d == pg.Async {
		return format.SyncInterval
	}
	return format.SyncAlways
}

// writerSync returns the writer's sync policy of c: WriterSync if set (it
// was validated), else the one matching c.Durability.
func (c Config) writerSync() format.SyncPolicy {
	if c.WriterSync != "" {
		if p, err := format.ParseSyncPolicy(c.WriterSync); err == nil {
			return p
		}
	}
	return writerSync(c.Durability)
}

type fileMode struct {
	codec        wire.Codec
	dir, recvDir string
	w            *format.Writer
	shipNC       *nats.Conn
	recvNC       *nats.Conn
	shp          *shipper.Shipper
	rcv          *receiver.Receiver

	runCtx context.Context // of the shipper and receiver; cancel stops them
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// The receiver runs in the apply and paced phases only: on a real
	// deployment it runs next to the microservice, not on the legacy host,
	// and the CDC modes have no consumer either.
	rcvCancel context.CancelFunc
	rcvDone   chan struct{}
	applied   int64 // changes applied by receivers that were stopped
	errMu     sync.Mutex
	err       error
}

func newFileMode(cfg Config, br *broker) (*fileMode, error) {
	dir, err := os.MkdirTemp("", "ferry-bench-files-")
	if err != nil {
		return nil, fmt.Errorf("bench: creating the change-file directory: %w", err)
	}
	codec, err := wire.ParseCodec(cfg.Codec)
	if err != nil {
		return nil, err
	}
	m := &fileMode{codec: codec, dir: filepath.Join(dir, "changes"), recvDir: filepath.Join(dir, "receiver")}
	m.runCtx, m.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*fileMode, error) {
		m.close()
		return nil, err
	}
	if m.w, err = format.OpenWriter(m.dir, fileSource, format.WithSync(cfg.writerSync(), 100*time.Millisecond)); err != nil {
		return fail(fmt.Errorf("bench: opening the change-file writer: %w", err))
	}
	if m.shipNC, err = br.connect("ferry-bench-shipper"); err != nil {
		return fail(err)
	}
	if m.recvNC, err = br.connect("ferry-bench-receiver"); err != nil {
		return fail(err)
	}
	return m, nil
}

// Commit writes tx to the change files (the legacy's sink).
func (m *fileMode) Commit(tx *format.Tx) (format.Position, error) { return m.w.Commit(tx) }

func (m *fileMode) setup(ctx context.Context, conn *pgx.Conn) error { return nil }

func (m *fileMode) fail(err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *fileMode) failed() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

func (m *fileMode) start(ctx context.Context) error {
	shp, err := shipper.NewFromConn(ctx, m.shipNC, jsclient.Config{Stream: fileStream}, m.dir, fileSource, shipper.WithCodec(m.codec))
	if err != nil {
		return fmt.Errorf("bench: creating the shipper: %w", err)
	}
	m.shp = shp
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := shp.Run(m.runCtx); err != nil {
			m.fail(fmt.Errorf("bench: shipper: %w", err))
		}
	}()
	return nil
}

// startReceiver starts a receiver on the receiver's data directory; one
// that ran before resumes from its store.
func (m *fileMode) startReceiver(ctx context.Context) error {
	if m.rcvDone != nil {
		return nil
	}
	rcv, err := receiver.New(receiver.WithNATS(m.recvNC), receiver.WithDataDir(m.recvDir),
		receiver.WithStream(fileStream), receiver.WithChangeLogRetention(0, time.Hour))
	if err != nil {
		return fmt.Errorf("bench: creating the receiver: %w", err)
	}
	m.rcv = rcv
	rctx, cancel := context.WithCancel(m.runCtx)
	m.rcvCancel, m.rcvDone = cancel, make(chan struct{})
	done := m.rcvDone
	go func() {
		defer close(done)
		if err := rcv.Run(rctx); err != nil {
			m.fail(fmt.Errorf("bench: receiver: %w", err))
		}
	}()
	return nil
}

// stopReceiver stops the receiver and waits for it.
func (m *fileMode) stopReceiver() {
	if m.rcvDone == nil {
		return
	}
	m.applied = m.appliedChanges()
	m.rcvCancel()
	<-m.rcvDone
	m.rcv, m.rcvDone = nil, nil
}

// receiving says whether a receiver runs.
func (m *fileMode) receiving() bool { return m.rcvDone != nil }

func (m *fileMode) shippedChanges() int64 {
	if m.shp == nil {
		return 0
	}
	return int64(m.shp.Stats().Changes)
}

// appliedChanges returns the changes applied to the store (by every
// receiver that ran on it).
func (m *fileMode) appliedChanges() int64 {
	if m.rcv == nil {
		return m.applied
	}
	return int64(m.rcv.Positions()[fileSource].Changes)
}

// watchApplied reports to lat when each transaction becomes readable in the
// receiver's store: it wakes on every store commit that adds changes
// (Store.Changed, what the receiver's change feed waits on) and reads the
// new changes of the change log. The returned function stops it.
func (m *fileMode) watchApplied(lat *latencies) func() error {
	ctx, cancel := context.WithCancel(m.runCtx)
	done := make(chan error, 1)
	st := m.rcv.Store()
	_, after := st.ChangeRange()
	go func() {
		seen := ""
		for {
			notify := st.Changed()
			for {
				chs, err := st.Changes(after, 10000)
				if err != nil {
					done <- fmt.Errorf("bench: reading the receiver's change log: %w", err)
					return
				}
				now := time.Now().UnixNano()
				for _, c := range chs {
					after = c.ID
					if c.TxID == seen {
						continue // the same transaction's next change
					}
					seen = c.TxID
					if v, err := strconv.ParseInt(c.TxID, 10, 64); err == nil {
						lat.visible(v, now)
					}
				}
				if len(chs) < 10000 {
					break
				}
			}
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-notify:
			}
		}
	}()
	return func() error {
		cancel()
		return <-done
	}
}

// fileBytes returns the bytes of the change files.
func (m *fileMode) fileBytes() int64 {
	ents, _ := os.ReadDir(m.dir)
	var n int64
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".ferry" {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// stop stops the shipper and the receiver.
func (m *fileMode) stop() {
	m.stopReceiver()
	if m.shp != nil {
		m.shp.Stop()
	}
	m.cancel()
	m.wg.Wait()
}

func (m *fileMode) close() {
	m.stop()
	if m.w != nil {
		m.w.Close()
	}
	for _, nc := range []*nats.Conn{m.shipNC, m.recvNC} {
		if nc != nil {
			nc.Close()
		}
	}
	os.RemoveAll(filepath.Dir(m.dir))
}
