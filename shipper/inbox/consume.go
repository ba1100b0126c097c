package inbox

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/ferrysync/ferry/format/command"
)

// Handler carries out the commands of one inbox file, in order, for a Go
// legacy. It must be idempotent by command id (SPEC.md, "Write-back
// records"): record the id in the same database transaction as the write,
// with what it wrote (the row version, the transaction id), and for an id
// already recorded carry out nothing but write its outcome again —
// Writer.RecordApplied for one carried out, Writer.Reject with the recorded
// reason for one refused: the command may come back after the agent forgot
// it (Config.RescanBack), and then only that record ends its wait. It
// returns once every command has its record in the change files
// (Writer.Prepare + Commit, Writer.Reject or Writer.RecordApplied). An
// error makes Consume offer the same file again: refuse a command the
// database refuses (a value too long, a constraint) rather than fail the
// file with it, or the file fails for ever (bench/writeback: a savepoint
// per command).
type Handler func(ctx context.Context, cmds []command.Command) error

// ConsumeConfig configures Consume.
type ConsumeConfig struct {
	// Poll is how often the inbox is listed for new files (default 5 ms;
	// the agent removes files, so a listing is short).
	Poll time.Duration
	// RetryAfter is the wait after a Handler error (default 1 s).
	RetryAfter time.Duration
}

// Consume hands the inbox files of dir to h in name order until ctx is
// done. Files are offered once per process: the agent removes a file once
// every outcome is in the change files, and a restarted legacy is offered
// every file still there again (its id records make the repeats no-ops). A
// file may appear with a name before files already handled (a command
// offered again after its delivery was lost, SPEC.md section 23): every
// file not yet handled is offered, never only those after the last one.
func Consume(ctx context.Context, dir string, cfg ConsumeConfig, h Handler) error {
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Millisecond
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	// The files handled by this process that are still there: bounded by
	// the inbox (names gone from it are forgotten).
	handled := map[string]bool{}
	for {
		files, err := List(dir)
		if err != nil {
			return err
		}
		// Forgotten once gone: a name can come back (the agent writes a
		// removed file's first command again after a restart of its own).
		listed := make(map[string]bool, len(files))
		for _, f := range files {
			listed[f.Name] = true
		}
		for name := range handled {
			if !listed[name] {
				delete(handled, name)
			}
		}
		progressed := false
		for _, f := range files {
			if handled[f.Name] {
				continue
			}
			cmds, err := ReadFile(f.Path)
			if errors.Is(err, os.ErrNotExist) {
				continue // done and removed meanwhile
			}
			if err != nil {
				return err
			}
			if err := h(ctx, cmds); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(cfg.RetryAfter):
				}
				break // list again: offer this file again
			}
			handled[f.Name], progressed = true, true
		}
		if progressed {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.Poll):
		}
	}
}
