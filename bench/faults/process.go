package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process runs an executable: Start, then Kill (SIGKILL) or Stop (SIGTERM),
// then Start again with the same arguments. With Restart set it is
// supervised like a systemd unit with Restart=on-failure: when it exits by
// itself it is started again after Restart. Its output, across restarts,
// goes to one log file.
type Process struct {
	Name    string
	Bin     string
	Args    []string
	Log     string   // path of the log file
	Env     []string // added to this process's environment
	Restart time.Duration

	mu      sync.Mutex
	cmd     *exec.Cmd // the current run, nil between runs
	want    bool      // Start called and no Kill/Stop since
	sup     chan struct{}
	exits   int   // runs that ended by themselves
	lastErr error // how the last of them ended
	runs    int
}

// Start starts the process (and its supervision); it fails if it is
// already started.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.want {
		return fmt.Errorf("faults: %s already started", p.Name)
	}
	cmd, err := p.spawnLocked()
	if err != nil {
		return err
	}
	p.want = true
	p.sup = make(chan struct{})
	go p.supervise(cmd, p.sup)
	return nil
}

func (p *Process) spawnLocked() (*exec.Cmd, error) {
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("faults: opening log of %s: %w", p.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	p.runs++
	fmt.Fprintf(logf, "=== faults: start %d of %s: %s %v\n", p.runs, p.Name, p.Bin, p.Args)
	cmd := exec.Command(p.Bin, p.Args...)
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("faults: starting %s: %w", p.Name, err)
	}
	p.cmd = cmd
	return cmd, nil
}

// supervise waits for each run and restarts the process if it ended by
// itself and Restart is set.
func (p *Process) supervise(cmd *exec.Cmd, done chan struct{}) {
	defer close(done)
	for {
		err := cmd.Wait()
		p.mu.Lock()
		p.cmd = nil
		if !p.want {
			p.mu.Unlock()
			return
		}
		p.exits++
		p.lastErr = fmt.Errorf("run %d exited by itself: %v", p.runs, err)
		if p.Restart <= 0 {
			p.want = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		time.Sleep(p.Restart)
		p.mu.Lock()
		if !p.want {
			p.mu.Unlock()
			return
		}
		cmd, err = p.spawnLocked()
		if err != nil {
			p.lastErr, p.want = err, false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// Running reports whether a run of the process is under way.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Exits returns how many runs ended by themselves (not by Kill or Stop) and
// how the last one ended.
func (p *Process) Exits() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits, p.lastErr
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to grace before killing it.
func (p *Process) Stop(grace time.Duration) error { return p.signal(syscall.SIGTERM, grace) }

// Pause and Resume freeze and thaw the process (SIGSTOP/SIGCONT).
func (p *Process) Pause() error  { return p.raw(syscall.SIGSTOP) }
func (p *Process) Resume() error { return p.raw(syscall.SIGCONT) }

func (p *Process) raw(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("faults: %s not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

func (p *Process) signal(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, sup := p.cmd, p.sup
	p.want = false
	p.mu.Unlock()
	if sup == nil {
		return nil
	}
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(sig)
		if sig != syscall.SIGKILL {
			select {
			case <-sup:
			case <-time.After(grace):
				_ = cmd.Process.Kill()
			}
		}
	}
	<-sup
	p.mu.Lock()
	p.sup = nil
	p.mu.Unlock()
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("faults: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitTCP waits until addr accepts connections or ctx ends.
func WaitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("faults: waiting for %s to listen: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
