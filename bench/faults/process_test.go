package faults_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrysync/ferry/bench/faults"
)

func TestProcess(t *testing.T) {
	dir := t.TempDir()
	t.Run("KillAndRestart", func(t *testing.T) {
		p := &faults.Process{Name: "sleeper", Bin: "/bin/sleep", Args: []string{"60"}, Log: filepath.Join(dir, "sleep.log")}
		must(t, p.Start())
		if err := p.Start(); err == nil {
			t.Errorf("second Start succeeded, want an error")
		}
		if !p.Running() {
			t.Fatalf("not running after Start")
		}
		must(t, p.Kill())
		if p.Running() {
			t.Fatalf("running after Kill")
		}
		must(t, p.Start())
		must(t, p.Stop(time.Second))
		if n, err := p.Exits(); n != 0 {
			t.Errorf("Exits() = %d, %v; want 0 (every run was ended by the test)", n, err)
		}
		log, err := os.ReadFile(p.Log)
		must(t, err)
		if got := strings.Count(string(log), "=== faults: start"); got != 2 {
			t.Errorf("log records %d starts, want 2:\n%s", got, log)
		}
	})
	t.Run("SupervisedRestart", func(t *testing.T) {
		p := &faults.Process{Name: "quitter", Bin: "/bin/sh", Args: []string{"-c", "exit 3"}, Log: filepath.Join(dir, "quit.log"), Restart: 20 * time.Millisecond}
		must(t, p.Start())
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := p.Exits()
			if n >= 3 {
				if err == nil || !strings.Contains(err.Error(), "exit status 3") {
					t.Errorf("last exit %v, want exit status 3", err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d supervised restarts in 10 s, want 3", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		must(t, p.Kill())
		n, _ := p.Exits()
		time.Sleep(100 * time.Millisecond)
		if m, _ := p.Exits(); m != n || p.Running() {
			t.Errorf("restarted after Kill (exits %d then %d)", n, m)
		}
	})
	t.Run("Unsupervised", func(t *testing.T) {
		p := &faults.Process{Name: "once", Bin: "/bin/sh", Args: []string{"-c", "exit 1"}, Log: filepath.Join(dir, "once.log")}
		must(t, p.Start())
		deadline := time.Now().Add(10 * time.Second)
		for p.Running() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		if n, _ := p.Exits(); n != 1 {
			t.Errorf("Exits() = %d, want 1", n)
		}
		must(t, p.Start()) // a process that ended may be started again
		must(t, p.Kill())
	})
}
