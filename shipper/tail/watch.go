package tail

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch turns file system events in a directory into wake-ups. Events are
// hints only (coalesced, dropped on overflow, absent on network file
// systems): a caller still polls. An overflow is reported as a wake-up too,
// so the caller rescans.
type Watch struct {
	w        *fsnotify.Watcher
	c        chan struct{}
	done     chan struct{}
	coalesce time.Duration
	wg       sync.WaitGroup
}

// NewWatch watches dir. Close stops it.
//
// After each wake-up it takes no event for coalesce (0: none): a writer
// appending continuously then costs one wake-up per coalesce, not one per
// append, while the kernel merges the events of the meantime (a modified
// file's events queue as one). A caller that reads at most once per
// coalesce anyway loses no latency by it.
func NewWatch(dir string, coalesce time.Duration, log *slog.Logger) (*Watch, error) {
	if coalesce < 0 {
		return nil, fmt.Errorf("tail: negative coalescing interval %v", coalesce)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("tail: creating file watcher: %w", err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("tail: watching %s: %w", dir, err)
	}
	wt := &Watch{w: w, c: make(chan struct{}, 1), done: make(chan struct{}), coalesce: coalesce}
	wt.wg.Add(1)
	go func() {
		defer wt.wg.Done()
		wt.loop(log)
	}()
	return wt, nil
}

// C returns the wake-up channel.
func (wt *Watch) C() <-chan struct{} { return wt.c }

func (wt *Watch) wake() {
	select {
	case wt.c <- struct{}{}:
	default:
	}
}

func (wt *Watch) loop(log *slog.Logger) {
	var pause *time.Timer
	if wt.coalesce > 0 {
		pause = time.NewTimer(wt.coalesce)
		defer pause.Stop()
	}
	for {
		select {
		case <-wt.done:
			return
		case _, ok := <-wt.w.Events:
			if !ok {
				return
			}
			wt.wake()
			if pause != nil {
				pause.Reset(wt.coalesce)
				select {
				case <-wt.done:
					return
				case <-pause.C:
				}
			}
		case err, ok := <-wt.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				log.Warn("file events overflowed; rescanning", "err", err)
			} else {
				log.Warn("file watcher error; relying on polling", "err", err)
			}
			wt.wake()
		}
	}
}

// Close stops watching and waits for the watcher's goroutine.
func (wt *Watch) Close() error {
	close(wt.done)
	err := wt.w.Close()
	wt.wg.Wait()
	return err
}
