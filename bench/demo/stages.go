package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferrysync/ferry/receiver"
	"github.com/ferrysync/ferry/shipper"
	"github.com/ferrysync/ferry/shipper/inbox"
	"github.com/ferrysync/ferry/shipper/jsclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stages are the shipper and the receiver, embedded as libraries, and the
// receiver's HTTP API.
type stages struct {
	ship     *shipper.Group // as ferry ship runs it: stream-creation retry included
	shipStop context.CancelFunc
	shipDone chan struct{}
	recv     *receiver.Receiver
	srv      *http.Server
	httpAddr string
	inboxDir string // write-back: where the agent delivers commands

	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

func (s *stages) fail(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

// problem describes what went wrong in the stages, for an error message.
func (s *stages) problem() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		return errors.Join(s.errs...).Error()
	}
	st := s.recv.Status()
	for _, src := range st.Sources {
		if src.Error != "" {
			return fmt.Sprintf("receiver: source %s: %s", src.Source, src.Error)
		}
	}
	if st.Error != "" {
		return "receiver: " + st.Error
	}
	return "no error reported"
}

// startStages starts the receiver (and its HTTP API on cfg.HTTP), whose
// gate waits for the initial load of every table of waitLoad, and the
// shipper of changesDir.
func startStages(ctx context.Context, cfg *Config, nc *nats.Conn, changesDir, dataDir string, waitLoad []string) (*stages, error) {
	// The stages outlive ctx (Ctrl-C stops the legacy only): stop ends them.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &stages{cancel: cancel}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()
	ship, err := shipper.NewGroup(nc, jsclient.Config{}, []shipper.SourceConfig{{Name: Source, Dir: changesDir}},
		shipper.WithLogger(cfg.Log.With("component", "shipper")))
	if err != nil {
		return nil, fmt.Errorf("demo: starting the shipper: %w", err)
	}
	s.ship = ship
	ropts := []receiver.Option{receiver.WithNATS(nc), receiver.WithDataDir(dataDir), receiver.WithWaitLoad(waitLoad...),
		receiver.WithLogger(cfg.Log.With("component", "receiver"))}
	if cfg.CanaryRate > 0 {
		// The canary service's sidecar: write-back of orders, and its own
		// changes left out of its feed (no echo).
		ropts = append(ropts, receiver.WithCommands(Canary, map[string]string{CanaryTable: Source}), receiver.WithExcludeOrigins(Canary))
	}
	recv, err := receiver.New(ropts...)
	if err != nil {
		return nil, fmt.Errorf("demo: starting the receiver: %w", err)
	}
	s.recv = recv
	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		recv.Close()
		return nil, fmt.Errorf("demo: listening on %s for the receiver's API: %w (use another --http address)", cfg.HTTP, err)
	}
	s.httpAddr = ln.Addr().String()
	s.srv = &http.Server{Handler: recv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("receiver API: %w", err))
		}
	}()
	go func() {
		defer s.wg.Done()
		s.fail(recv.Run(ctx))
	}()
	if cfg.CanaryRate > 0 {
		// The agent beside the shipper, as ferry ship --inbox runs it.
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		s.inboxDir = filepath.Join(changesDir, "inbox")
		ag, err := inbox.New(js, inbox.Config{Source: Source, ChangeDir: changesDir, Dir: s.inboxDir,
			Logger: cfg.Log.With("component", "inbox")})
		if err != nil {
			return nil, fmt.Errorf("demo: starting the write-back agent: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.fail(ag.Run(ctx))
		}()
	}
	shipCtx, shipStop := context.WithCancel(ctx)
	s.shipStop, s.shipDone = shipStop, make(chan struct{})
	go func() {
		defer s.wg.Done()
		defer close(s.shipDone)
		s.fail(ship.Run(shipCtx))
	}()
	ok = true
	return s, nil
}

// stop stops the shipper, the API and the receiver, and waits for them.
func (s *stages) stop() {
	if s.shipStop != nil {
		s.shipStop() // the shipper drains what is in flight
		<-s.shipDone
	}
	if s.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.srv.Shutdown(sctx)
		cancel()
	}
	s.cancel()
	s.wg.Wait()
}

// shipped returns what JetStream acknowledged, and the compressed bytes.
func (s *stages) shipped() (Stage, int64) {
	ships := s.ship.Shippers()
	if len(ships) == 0 {
		return Stage{}, 0 // still creating the stream
	}
	st := ships[0].Stats()
	return Stage{Changes: int64(st.Changes), Bytes: int64(st.RawBytes), LastCommit: st.LastCommit}, int64(st.CompressedBytes)
}

// applied returns what the receiver applied.
func (s *stages) applied() Stage {
	p := s.recv.Positions()[Source]
	return Stage{Changes: int64(p.Changes), LastCommit: p.LastCommit}
}

// observer watches the receiver's commits and records, for every
// transaction committed after since, the delay from its commit time to the
// moment it became visible in the receiver's store.
type observer struct {
	lat    *latencies
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *stages) observe(lat *latencies, since int64) *observer {
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{lat: lat, cancel: cancel, done: make(chan struct{})}
	if lat == nil {
		close(o.done)
		return o
	}
	st := s.recv.Store()
	_, after := st.ChangeRange()
	go func() {
		defer close(o.done)
		for {
			ch := st.Changed()
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			// Visible now: everything committed up to here. Changes
			// committed while we read are stamped no earlier than the
			// batch that applied them.
			seen := time.Now().UnixNano()
			for {
				cs, err := st.Changes(after, 10000)
				if err != nil || len(cs) == 0 {
					break
				}
				for i := range cs {
					c := &cs[i]
					after = c.ID
					// A transaction's first change, committed by the
					// legacy (a load row's commit time is its chunk's).
					if c.Version.Index != 0 || c.Load != "" || c.CommitTime <= since {
						continue
					}
					lat.add(time.Duration(max(seen, c.AppliedAt) - c.CommitTime))
				}
				if len(cs) < 10000 {
					break
				}
			}
		}
	}()
	return o
}

func (o *observer) stop() {
	o.cancel()
	<-o.done
}
