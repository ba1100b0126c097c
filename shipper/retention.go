package shipper

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrysync/ferry/format"
)

// Retention says what happens to segments once they are shipped.
type Retention int

// Retention policies.
const (
	// RetainKeep leaves shipped segments alone (something else prunes them).
	RetainKeep Retention = iota
	// RetainDelete deletes them.
	RetainDelete
	// RetainArchive moves them into an archive directory.
	RetainArchive
)

func (r Retention) String() string {
	switch r {
	case RetainKeep:
		return "keep"
	case RetainDelete:
		return "delete"
	case RetainArchive:
		return "archive"
	}
	return fmt.Sprintf("retention(%d)", int(r))
}

// ParseRetention parses "keep", "delete" or "archive".
func ParseRetention(s string) (Retention, error) {
	switch strings.ToLower(s) {
	case "keep":
		return RetainKeep, nil
	case "delete":
		return RetainDelete, nil
	case "archive":
		return RetainArchive, nil
	}
	return 0, fmt.Errorf("shipper: unknown retention %q (want keep, delete or archive)", s)
}

// retainer applies the retention policy. A segment qualifies once the
// acknowledged position has moved past it (it is sealed or abandoned, and
// every byte of it is acknowledged), it is not the newest segment of the
// source, and MinAge has passed since the shipper saw it fully acknowledged:
// the age counts from the acknowledgement, not from the file's mtime, so that
// a broker that acknowledges before it fsyncs can lose a message and the file
// is still there to re-ship it (README.md, guarantee 6: "A broker's ack is not durability").
type retainer struct {
	policy     Retention
	minAge     time.Duration
	archiveDir string
	ackedAt    map[uint64]time.Time
}

// apply removes or archives what qualifies and returns what it did.
func (r *retainer) apply(dir, source string, acked format.Position, now time.Time) ([]string, error) {
	if r.policy == RetainKeep {
		return nil, nil
	}
	segs, err := format.ListSegments(dir, source)
	if err != nil {
		return nil, err
	}
	var done []string
	for i, s := range segs {
		if s.Segment >= acked.Segment || i == len(segs)-1 {
			break
		}
		at, ok := r.ackedAt[s.Segment]
		if !ok {
			r.ackedAt[s.Segment] = now
			continue
		}
		if now.Sub(at) < r.minAge {
			continue
		}
		switch r.policy {
		case RetainDelete:
			if err := os.Remove(s.Path); err != nil && !os.IsNotExist(err) {
				return done, fmt.Errorf("shipper: deleting shipped segment: %w", err)
			}
		case RetainArchive:
			if err := os.MkdirAll(r.archiveDir, 0o755); err != nil {
				return done, fmt.Errorf("shipper: creating archive directory: %w", err)
			}
			dst := filepath.Join(r.archiveDir, filepath.Base(s.Path))
			if err := os.Rename(s.Path, dst); err != nil {
				return done, fmt.Errorf("shipper: archiving shipped segment (the archive directory must be on the same file system): %w", err)
			}
			if err := syncDir(r.archiveDir); err != nil {
				return done, err
			}
		}
		delete(r.ackedAt, s.Segment)
		done = append(done, s.Path)
	}
	if len(done) > 0 {
		if err := syncDir(dir); err != nil {
			return done, err
		}
	}
	return done, nil
}

// forget drops the acknowledgement times of segments from seg on: the stream
// lost them, they wait to be acknowledged again.
func (r *retainer) forget(seg uint64) {
	for s := range r.ackedAt {
		if s >= seg {
			delete(r.ackedAt, s)
		}
	}
}

func statSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// segmentSize is the size of the segment at path; of its data only, if open
// (the newest segment), which a preallocating writer keeps larger than its
// frames.
func segmentSize(path string, open bool) (int64, error) {
	if !open {
		return statSize(path)
	}
	f, err := format.OpenSegment(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return format.EstimateDataSize(f, fi.Size())
}
