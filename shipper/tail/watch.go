package tail

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/fsnotify/fsnotify"
)

// Watch turns file system events in a directory into wake-ups. Events are
// hints only (coalesced, dropped on overflow, absent on network file
// systems): a caller still polls. An overflow is reported as a wake-up too,
// so the caller rescans.
type Watch struct {
	w    *fsnotify.Watcher
	c    chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// NewWatch watches dir. Close stops it.
func NewWatch(dir string, log *slog.Logger) (*Watch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("tail: creating file watcher: %w", err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("tail: watching %s: %w", dir, err)
	}
	wt := &Watch{w: w, c: make(chan struct{}, 1), done: make(chan struct{})}
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
	for {
		select {
		case <-wt.done:
			return
		case _, ok := <-wt.w.Events:
			if !ok {
				return
			}
			wt.wake()
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
