package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NATSServer is a nats-server process with JetStream, alone or as a node of
// a cluster on loopback. Its port and store survive restarts.
type NATSServer struct {
	Name        string
	Port        int
	ClusterPort int // 0 for a single server
	Dir         string
	*Process
}

// URL returns the client URL of the server.
func (s *NATSServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.Port) }

// Start starts the server and waits until it accepts clients.
func (s *NATSServer) Start(ctx context.Context) error {
	if err := s.Process.Start(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return WaitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", s.Port))
}

// NATSOption configures the servers NewNATS prepares.
type NATSOption func(*natsOptions)

type natsOptions struct {
	syncAlways bool
}

// WithSyncAlways makes JetStream write and fsync every message before it
// acknowledges it (sync_interval: always). By default a server killed with
// kill -9 can lose messages it acknowledged but had not yet written out
// (FACTS.md, Durability): the shipper re-ships them from its files, but a
// scenario with other publishers on the stream (a loader, write-back
// commands) then sees their messages take the lost sequence numbers, a
// broker-loss case of its own that such scenarios do not model.
func WithSyncAlways() NATSOption { return func(o *natsOptions) { o.syncAlways = true } }

// NewNATS prepares n nats-server processes under dir: one standalone server
// for n == 1, else an n-node JetStream cluster with routes between all
// nodes. Nothing is started.
func NewNATS(bin, dir string, n int, opts ...NATSOption) ([]*NATSServer, error) {
	var o natsOptions
	for _, opt := range opts {
		opt(&o)
	}
	servers := make([]*NATSServer, n)
	for i := range servers {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s := &NATSServer{Name: fmt.Sprintf("n%d", i+1), Port: port, Dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		if n > 1 {
			if s.ClusterPort, err = FreePort(); err != nil {
				return nil, err
			}
		}
		servers[i] = s
	}
	for _, s := range servers {
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("faults: %w", err)
		}
		conf := filepath.Join(s.Dir, "nats.conf")
		if err := os.WriteFile(conf, []byte(natsConfig(s, servers, o)), 0o644); err != nil {
			return nil, fmt.Errorf("faults: writing %s: %w", conf, err)
		}
		s.Process = &Process{Name: "nats-" + s.Name, Bin: bin, Args: []string{"-c", conf}, Log: filepath.Join(s.Dir, "nats.log")}
	}
	return servers, nil
}

func natsConfig(s *NATSServer, all []*NATSServer, o natsOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\n", s.Name, s.Port)
	sync := ""
	if o.syncAlways {
		sync = "  sync_interval: always\n"
	}
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n%s}\n", filepath.Join(s.Dir, "js"), sync)
	if s.ClusterPort != 0 {
		var routes []string
		for _, o := range all {
			if o != s {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.ClusterPort))
			}
		}
		fmt.Fprintf(&b, "cluster {\n  name: ferry\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", s.ClusterPort, strings.Join(routes, ", "))
	}
	return b.String()
}

// URLs joins the client URLs of servers.
func URLs(servers []*NATSServer) string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}
