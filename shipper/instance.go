package shipper

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/ferrysync/ferry/format"
)

// instance is this Shipper's identity in its lease, "host:pid:id:boot": id is
// a random id kept in a file next to the checkpoint (DIR/<source>.ship-instance
// by default), boot the kernel's boot id. The Shipper holds an exclusive
// flock on that file for as long as it runs, and the kernel drops it when the
// process dies (kill -9 included).
//
// That makes one takeover safe: a lease whose holder names this host, this
// boot and this id, found while this Shipper holds the flock, belongs to a
// process that is gone (a live one would hold the flock), so this Shipper
// may take it over at once instead of waiting for its TTL. A shipper with
// another identity (another host, another checkpoint directory, a cloned
// machine with another boot) is still refused until the lease expires. The
// fenced first publish of every session stays the safety net.
type instance struct {
	f    *os.File
	path string
	id   string
	host string
	boot string
}

// lockInstance opens and flocks the instance file at path, creating its id
// if it has none. A file locked by another process is ErrSourceBusy.
func lockInstance(path, source string) (*instance, error) {
	// Never through a link: the file is truncated and rewritten below, so a
	// link would clobber whatever it points to.
	f, err := format.OpenRegular(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("shipper: opening instance file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another shipper process on this host ships source %s with the same checkpoint directory (it holds %s); stop it first",
				ErrSourceBusy, source, path)
		}
		return nil, fmt.Errorf("shipper: locking instance file %s: %w", path, err)
	}
	in := &instance{f: f, path: path}
	in.host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		in.boot = strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")
	}
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	id := strings.TrimSpace(string(buf[:n]))
	if _, err := hex.DecodeString(id); err != nil || len(id) != 16 {
		var r [8]byte
		_, _ = rand.Read(r[:])
		id = hex.EncodeToString(r[:])
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(id+"\n"), 0)
			if err == nil {
				err = f.Sync()
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("shipper: writing instance file %s: %w", path, err)
		}
	}
	in.id = id
	return in, nil
}

// owner is the lease holder's name for this process.
func (in *instance) owner() string {
	return fmt.Sprintf("%s:%d:%s:%s", in.host, os.Getpid(), in.id, in.boot)
}

// mine reports whether holder names a process of this identity on this host
// and boot: a dead earlier run (this one holds the flock), or this very one.
func (in *instance) mine(holder string) bool {
	f := strings.Split(holder, ":")
	if len(f) < 4 || in.id == "" || in.boot == "" || in.host == "" {
		return false
	}
	n := len(f)
	return f[n-1] == in.boot && f[n-2] == in.id && strings.Join(f[:n-3], ":") == in.host
}

func (in *instance) close() { in.f.Close() }
