package api

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/receiver/store"
)

// VersionJSON is a change's identity in its source.
type VersionJSON struct {
	Source  string `json:"source"`
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
	Index   int    `json:"index"`
}

// RowJSON is a row as the API serves it. Value is the after image: the JSON
// document itself when the content type is JSON, else base64 (Encoding says
// which).
type RowJSON struct {
	Table       string          `json:"table"`
	Key         string          `json:"key,omitempty"`
	KeyBase64   string          `json:"key_base64,omitempty"`
	Op          string          `json:"op"`
	ContentType string          `json:"content_type"`
	Encoding    string          `json:"encoding"`
	Value       json.RawMessage `json:"value"`
	Version     VersionJSON     `json:"version"`
	// RowVersion is the legacy's row version (omitted when it supplied none).
	RowVersion uint64    `json:"row_version,omitempty"`
	CommitTime time.Time `json:"commit_time"`
	ChangeID   uint64    `json:"change_id"`
	// Load is the initial load the row's state came from, if it did.
	Load string `json:"load,omitempty"`
}

// ChangeJSON is a change log entry as the API, the SSE feed and the webhook
// serve it. ID is the cursor and the de-duplication key.
type ChangeJSON struct {
	ID          uint64          `json:"id"`
	Table       string          `json:"table"`
	Key         string          `json:"key,omitempty"`
	KeyBase64   string          `json:"key_base64,omitempty"`
	Op          string          `json:"op"`
	ContentType string          `json:"content_type"`
	Encoding    string          `json:"encoding"`
	After       json.RawMessage `json:"after,omitempty"`
	Before      json.RawMessage `json:"before,omitempty"`
	Version     VersionJSON     `json:"version"`
	RowVersion  uint64          `json:"row_version,omitempty"`
	CommitTime  time.Time       `json:"commit_time"`
	AppliedAt   time.Time       `json:"applied_at"`
	TxID        string          `json:"tx_id,omitempty"`
	Origin      string          `json:"origin,omitempty"`
	Command     string          `json:"command,omitempty"`
	// Load is the initial load the change came from (its rows are
	// inserts with version.source "load:<id>", version.segment the chunk,
	// version.offset the part); absent for a source's changes.
	Load string `json:"load,omitempty"`
}

func keyFields(k []byte) (string, string) {
	if utf8.Valid(k) {
		return string(k), ""
	}
	return "", base64.StdEncoding.EncodeToString(k)
}

// image renders an image: JSON documents as themselves, anything else (or
// a JSON image that is not valid JSON) as a base64 string.
func image(ct format.ContentType, b []byte) (json.RawMessage, string) {
	if ct == format.ContentJSON && json.Valid(b) {
		return json.RawMessage(b), "json"
	}
	s, _ := json.Marshal(base64.StdEncoding.EncodeToString(b))
	return s, "base64"
}

func version(v store.Version) VersionJSON {
	return VersionJSON{Source: v.Source, Segment: v.Segment, Offset: v.Offset, Index: v.Index}
}

// Row converts a stored row.
func Row(r *store.Row) RowJSON {
	out := RowJSON{Table: r.Table, Op: r.Op.String(), ContentType: r.Content.MIME(), Version: version(r.Version),
		RowVersion: r.RowVersion, CommitTime: time.Unix(0, r.CommitTime).UTC(), ChangeID: r.ChangeID}
	out.Load, _ = store.LoadOf(r.Version.Source)
	out.Key, out.KeyBase64 = keyFields(r.Key)
	out.Value, out.Encoding = image(r.Content, r.Value)
	return out
}

// Change converts a change log entry.
func Change(c *store.Change) ChangeJSON {
	out := ChangeJSON{ID: c.ID, Table: c.Table, Op: c.Op.String(), ContentType: c.Content.MIME(), Version: version(c.Version),
		RowVersion: c.RowVersion, CommitTime: time.Unix(0, c.CommitTime).UTC(), AppliedAt: time.Unix(0, c.AppliedAt).UTC(), TxID: c.TxID, Origin: c.Origin, Command: c.Command, Load: c.Load}
	out.Key, out.KeyBase64 = keyFields(c.Key)
	if c.Op != format.OpDelete || len(c.After) > 0 {
		out.After, out.Encoding = image(c.Content, c.After)
	}
	if c.Before != nil {
		var enc string
		out.Before, enc = image(c.Content, c.Before)
		if out.Encoding == "" || enc == "base64" {
			out.Encoding = enc
		}
	}
	if out.Encoding == "" {
		out.Encoding = "json"
	}
	return out
}

// Status is the receiver's status as /v1/status serves it.
type Status struct {
	Stream          string  `json:"stream"`
	Consuming       bool    `json:"consuming"`
	CaughtUp        bool    `json:"caught_up"`
	Ready           bool    `json:"ready"`
	NotReadyReason  string  `json:"not_ready_reason,omitempty"`
	StreamSeq       uint64  `json:"stream_seq"`
	MessagesPending int64   `json:"messages_pending"`
	FirstChangeID   uint64  `json:"first_change_id"`
	LastChangeID    uint64  `json:"last_change_id"`
	WebhookChangeID *uint64 `json:"webhook_change_id,omitempty"`
	Error           string  `json:"error,omitempty"`
	// DiskFull is set while the store's disk is full: applying is paused
	// (reads are served) and resumes by itself once space returns; Error
	// says where and since when.
	DiskFull bool `json:"disk_full,omitempty"`
	// Row guard (receiver/README.md, "Merge rule"): changes skipped as not
	// newer than the stored row; changes applied over another source's
	// write without a row version on both sides (their result depends on
	// arrival order: the legacy should supply versions); tombstones held.
	// Counted since the receiver started, but tombstones.
	StaleChangesSkipped          uint64 `json:"stale_changes_skipped"`
	UnversionedCrossSourceWrites uint64 `json:"unversioned_cross_source_writes"`
	Tombstones                   int64  `json:"tombstones"`
	// Prepared transactions parked until their outcome frame arrives
	// (receiver/README.md, "Prepared transactions"): how many, how long the
	// oldest has waited, and outcome resolutions that named nothing parked.
	ParkedTransactions     int64          `json:"parked_transactions"`
	ParkedOldestAgeSeconds float64        `json:"parked_oldest_age_seconds"`
	UnmatchedOutcomes      uint64         `json:"unmatched_outcomes"`
	Sources                []SourceStatus `json:"sources"`
	// SourcesTotal counts every source known; SourcesOmitted those not
	// listed in Sources (at most 100 are: those that applied something or
	// were asked for with --source first).
	SourcesTotal   int `json:"sources_total"`
	SourcesOmitted int `json:"sources_omitted,omitempty"`
	// Loads lists the initial loads this receiver applied (or waits for,
	// --wait-load), one per table: its latest load (receiver/README.md,
	// "Initial load").
	Loads []LoadStatus `json:"loads"`
	// Commands is what became of the write-back commands submitted
	// through this receiver since it started (present with write-back).
	Commands *CommandsStatus `json:"commands,omitempty"`
}

// CommandsStatus counts this receiver's write-back commands: pending
// (submitted, no outcome yet; across restarts), applied and rejected
// (since it started), how long the oldest pending one has waited, the
// submission→outcome latency over the last 1,024, and the latest outcomes.
type CommandsStatus struct {
	Pending              int                 `json:"pending"`
	Applied              uint64              `json:"applied"`
	Rejected             uint64              `json:"rejected"`
	OldestPendingSeconds float64             `json:"oldest_pending_seconds"`
	LatencyP50Seconds    float64             `json:"latency_p50_seconds"`
	LatencyP99Seconds    float64             `json:"latency_p99_seconds"`
	Recent               []RecentCommandJSON `json:"recent"`
}

// RecentCommandJSON is one of the latest outcomes; Error is a rejection's
// reason.
type RecentCommandJSON struct {
	ID             string  `json:"id"`
	State          string  `json:"state"`
	Table          string  `json:"table"`
	Key            string  `json:"key"`
	Error          string  `json:"error,omitempty"`
	LatencySeconds float64 `json:"latency_seconds"`
}

// LoadStatus is one table's initial load.
type LoadStatus struct {
	Table string `json:"table"`
	// Load is the load id ("" while waiting for a load nobody started).
	Load string `json:"load,omitempty"`
	// Source says where the rows come from: "load:<id>".
	Source string `json:"source,omitempty"`
	// State is "loading", "done", "failed", or "waiting" (named by
	// --wait-load, no message of a load of the table seen yet).
	State string `json:"state"`
	// Rows counts the load rows received (applied and dropped), of
	// RowsEstimate (the loader's, 0 if unknown); RowsApplied those
	// written, RowsDropped those a newer live change made obsolete,
	// RowsIngested those written as sstables.
	Rows         uint64 `json:"rows"`
	RowsEstimate uint64 `json:"rows_estimate"`
	RowsApplied  uint64 `json:"rows_applied"`
	RowsDropped  uint64 `json:"rows_dropped"`
	RowsIngested uint64 `json:"rows_ingested"`
	// RowsSent is what the loader says it sent (done).
	RowsSent uint64 `json:"rows_sent,omitempty"`
	// RowsPerSecond is the receiver's rate over the load so far; ETA the
	// estimate's remaining rows at that rate (loading, estimate known).
	RowsPerSecond float64 `json:"rows_per_second"`
	ETASeconds    float64 `json:"eta_seconds,omitempty"`
	// Chunk and Part: the last chunk message applied.
	Chunk uint64 `json:"chunk"`
	Part  int    `json:"part"`
	// StartedAt and UpdatedAt: when this receiver applied the load's
	// first and last message.
	StartedAt *time.Time `json:"started_at,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	// Error says why the load failed.
	Error string `json:"error,omitempty"`
	// Wait says --wait-load names the table: /readyz waits for it.
	Wait bool `json:"wait,omitempty"`
}

// SourceStatus is one source's status.
type SourceStatus struct {
	Source string `json:"source"`
	// State is "ok", "waiting" (configured but nothing received yet) or
	// "stopped" (see Error).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// ErrorKind is what stopped the source: "gap" (a message does not
	// continue it: it resumes by itself once the shipper re-ships the
	// range), "corrupt", "header" or "limit".
	ErrorKind string `json:"error_kind,omitempty"`
	// ErrorFile and ErrorOffset name where in the source's change files the
	// error is (the segment file's name and the byte offset in it).
	ErrorFile   string `json:"error_file,omitempty"`
	ErrorOffset int64  `json:"error_offset,omitempty"`
	// Applied is where the next frame starts: segment and byte offset.
	AppliedSegment uint64 `json:"applied_segment"`
	AppliedOffset  int64  `json:"applied_offset"`
	// Shipped is the end of the furthest message this receiver has seen.
	ShippedSegment uint64 `json:"shipped_segment"`
	ShippedOffset  int64  `json:"shipped_offset"`
	// TailSegment/TailOffset: where the source's last message in the stream
	// ends (polled every few seconds); TailStreamSeq its stream sequence.
	TailSegment   uint64 `json:"tail_segment,omitempty"`
	TailOffset    int64  `json:"tail_offset,omitempty"`
	TailStreamSeq uint64 `json:"tail_stream_seq,omitempty"`
	// BehindBytes is the tail (or the furthest message seen) minus the
	// applied position when both are in one segment, -1 when the tail is in
	// a later segment.
	BehindBytes int64 `json:"behind_bytes"`
	// Pending says whether the stream holds messages of the source after
	// the last one applied.
	Pending bool `json:"pending"`
	// StreamSeq is the stream sequence of the last message applied from.
	StreamSeq uint64 `json:"stream_seq"`
	// LastCommitTime is the commit time of the last applied transaction;
	// AliveAt the time of the last applied frame (heartbeats included).
	LastCommitTime *time.Time `json:"last_commit_time,omitempty"`
	AliveAt        *time.Time `json:"alive_at,omitempty"`
	// LagSeconds is how old the oldest change of the source not yet
	// applied is, as far as the stream shows: 0 when everything the stream
	// holds of the source is applied, however long ago it last wrote
	// (consume.SourceStatus.LagSeconds).
	LagSeconds   float64 `json:"lag_seconds"`
	Transactions uint64  `json:"transactions"`
	Changes      uint64  `json:"changes"`
	// Parked counts the source's prepared transactions awaiting their
	// outcome.
	Parked    int64 `json:"parked,omitempty"`
	TornBytes int64 `json:"torn_bytes,omitempty"`
}
