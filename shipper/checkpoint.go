package shipper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ferrysync/ferry/format"
)

// checkpoint is the local record of the acknowledged position. It is a hint
// only: the stream's last message is the truth. It lets a restarted shipper
// notice a stream that lost acknowledged messages (README.md, guarantee 6: "A broker's ack is not durability"), and
// resume the repair of a hole a stop or crash interrupted.
type checkpoint struct {
	Stream  string `json:"stream"`
	Subject string `json:"subject"`
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
	// HoleSegment/HoleOffset: a hole in the stream not repaired yet (a
	// publish failed while later ones were stored). The stream's tail is
	// past it, so only this record brings a restarted shipper back to it.
	HoleSegment uint64 `json:"hole_segment,omitempty"`
	HoleOffset  int64  `json:"hole_offset,omitempty"`
	// Suspects: ids of messages published across a reconnection whose
	// place in the stream is not checked yet (Shipper.checkTail); a
	// restarted shipper checks under them before trusting the tail.
	Suspects []string `json:"suspects,omitempty"`
}

func (c checkpoint) pos() format.Position {
	return format.Position{Segment: c.Segment, Offset: c.Offset}
}

// loadCheckpoint reads the checkpoint at path; a missing file is no
// checkpoint (ok false).
func loadCheckpoint(path string) (checkpoint, bool, error) {
	f, err := format.OpenRegular(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return checkpoint{}, false, nil
	}
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("shipper: reading checkpoint: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("shipper: reading checkpoint %s: %w", path, err)
	}
	var c checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return checkpoint{}, false, fmt.Errorf("shipper: checkpoint %s is not valid JSON (%v); delete it, the stream holds the truth", path, err)
	}
	return c, true, nil
}

// saveCheckpoint writes c to path durably: a temporary file, fsync, rename,
// fsync of the directory (a rename without it can leave an empty file after a
// power cut: Beats #3537).
func saveCheckpoint(path string, c checkpoint) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("shipper: encoding checkpoint: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("shipper: writing checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("shipper: writing checkpoint %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("shipper: syncing checkpoint %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("shipper: closing checkpoint %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("shipper: renaming checkpoint into %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("shipper: opening directory %s to sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("shipper: syncing directory %s: %w", dir, err)
	}
	return nil
}
