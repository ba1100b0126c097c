package bench

import (
	"math"
	"time"
)

// Results is what a bench run measured: the machine, the configuration and
// one ModeResult per mode, in the order they ran.
type Results struct {
	Profile  string       `json:"profile"`
	Started  time.Time    `json:"started"`
	Seconds  float64      `json:"seconds"`
	Machine  Machine      `json:"machine"`
	Settings Settings     `json:"settings"`
	Modes    []ModeResult `json:"modes"`
	// InitialLoad is the initial-load phase's figures (nil when it did
	// not run).
	InitialLoad *InitialLoad `json:"initial_load,omitempty"`
	// Note is the operator's remark on the run (--note).
	Note string `json:"note,omitempty"`
	// Notes say how figures were obtained and attributed.
	Notes []string `json:"notes"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores     int    `json:"cores"`
	MemoryMiB int64  `json:"memory_mib"`
	CPU       string `json:"cpu"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Postgres  string `json:"postgres"`
	// LoadAvg is /proc/loadavg's 1-minute load when the run started and
	// when it ended: how busy the host was with other work too.
	LoadAvgStart float64 `json:"loadavg_start"`
	LoadAvgEnd   float64 `json:"loadavg_end"`
}

// Settings are the run's parameters, as used.
type Settings struct {
	Streams         int     `json:"streams"`
	PacedStreams    int     `json:"paced_streams"`
	TxSize          int     `json:"tx_size"`
	RowSize         int     `json:"row_size"`
	Mix             string  `json:"mix"`
	Seed            uint64  `json:"seed"`
	PhaseSeconds    float64 `json:"phase_seconds"`
	LatencyRate     float64 `json:"latency_rate"`
	Durability      string  `json:"durability"`
	WriterSync      string  `json:"writer_sync"`
	FileBefore      bool    `json:"file_before_images"`
	Codec           string  `json:"file_codec"`
	WriterProtocols string  `json:"writer_protocols"`
	HotRows         int     `json:"hot_rows"`
	HotPct          int     `json:"hot_tx_pct"`
	PollMillis      float64 `json:"cdc_poll_ms"`
	CleanupMillis   float64 `json:"cdc_cleanup_ms"`
	ExternalPG      bool    `json:"external_pg"`
	InitialRowCount int     `json:"initial_rows"`
	// LoadRows is the initial-load phase's table size (0: the phase was
	// off).
	LoadRows int `json:"load_rows"`
}

// InitialLoad is what the initial-load phase measured: the initial load
// (package shipper/load, as `ferry load` runs it) of a table of Rows
// ~200-byte rows from PostgreSQL, each step on a fresh embedded JetStream
// server and a fresh receiver.
type InitialLoad struct {
	Rows int64 `json:"rows"`
	// TableBytes is the table's pg_total_relation_size (heap, index,
	// TOAST); RowBytes the rows' JSON images and keys as the messages
	// carry them uncompressed (their Ferry-Raw-Len), over Rows.
	TableBytes int64   `json:"table_bytes"`
	RowBytes   float64 `json:"row_image_bytes"`
	Codec      string  `json:"codec"`
	// Stream: PostgreSQL → JetStream, the loader in this process
	// (load.Run), no receiver.
	Stream LoadStep `json:"stream"`
	// What Stream put in the stream: messages, their bytes as sent
	// (bodies and headers) and raw (uncompressed bodies).
	Messages    int64   `json:"messages"`
	WireBytes   int64   `json:"wire_bytes"`
	RawBytes    int64   `json:"raw_bytes"`
	Compression float64 `json:"compression_ratio"`
	// Ingest: a fresh receiver started on the stream Stream filled, until
	// it has applied every row: the receiver's ingest rate alone.
	Ingest LoadStep `json:"ingest"`
	// EndToEnd: a receiver running, then the load, until the receiver
	// has applied every row.
	EndToEnd LoadStep `json:"end_to_end"`
	// IngestSSTRows and EndToEndSSTRows are the rows of those two
	// receivers written as sstables (the receiver's bulk path; the rest
	// went through Pebble batches).
	IngestSSTRows   uint64 `json:"ingest_sstable_rows"`
	EndToEndSSTRows uint64 `json:"end_to_end_sstable_rows"`
	// Process: a loader process of its own (`ferry load`) into a fresh
	// stream, from its start to its exit; nil without
	// Config.LoaderCommand. Its ProcCPU is the process's own.
	Process *LoadStep `json:"process,omitempty"`
	// LoaderPeakRSS is that process's peak RSS in bytes (VmHWM).
	LoaderPeakRSS int64 `json:"loader_peak_rss_bytes,omitempty"`
	// StateCheck compares the receivers' rows (Ingest's and EndToEnd's)
	// with the table's, row by row.
	StateCheck *StateCheck `json:"state_check,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// LoadStep is one timed step of the initial-load phase.
type LoadStep struct {
	Seconds    float64 `json:"seconds"`
	Rows       int64   `json:"rows"`
	RowsPerSec float64 `json:"rows_per_sec"`
	// RawMBPerSec is the rows' uncompressed message bytes per second
	// (10^6 bytes).
	RawMBPerSec float64 `json:"raw_mb_per_sec"`
	// CPU seconds: this process (loader, receiver and JetStream, as the
	// step runs them; for Process the loader process's own) and the
	// PostgreSQL server's processes (0 when not on this host).
	ProcCPU float64 `json:"proc_cpu_s"`
	DBCPU   float64 `json:"db_cpu_s"`
}

// Phase holds the counters of one timed phase.
type Phase struct {
	Seconds       float64 `json:"seconds"`
	Txs           int64   `json:"txs"`
	Changes       int64   `json:"changes"`
	TxPerSec      float64 `json:"tx_per_sec"`
	ChangesPerSec float64 `json:"changes_per_sec"`
	// SliceTxPerSec holds each round's tx/s when the phase ran in rounds:
	// their spread says how noisy the host was.
	SliceTxPerSec []float64 `json:"slice_tx_per_sec,omitempty"`
	// Bytes written on the legacy host: WAL (pg_current_wal_lsn diff),
	// data pages (tables and indexes) written by the CHECKPOINT that ends
	// the phase plus those the background writer and backends wrote,
	// and change-file bytes (file mode).
	WALBytes       int64 `json:"wal_bytes"`
	DataBytes      int64 `json:"data_bytes"`
	FileBytes      int64 `json:"file_bytes"`
	RelationGrowth int64 `json:"relation_growth_bytes"`
	WALFPI         int64 `json:"wal_fpi"`
	// CPU seconds: the PostgreSQL server processes (postmaster, backends,
	// background workers, exited children), this process (getrusage), and
	// child processes of the mode (pg_recvlogical).
	DBCPU    float64 `json:"db_cpu_s"`
	ProcCPU  float64 `json:"proc_cpu_s"`
	ChildCPU float64 `json:"child_cpu_s"`
	// TxStages is where a legacy transaction's wall time went, in mean
	// microseconds per transaction (legacy phases only): a worker's tx/s
	// is one over their sum.
	TxStages *TxStages `json:"tx_stages_us,omitempty"`
}

// TxStages splits a legacy transaction's wall time, in mean microseconds
// per transaction. Exec holds the waits on the hot rows' locks, so the time
// others hold them shows there.
type TxStages struct {
	// Exec: BEGIN and the statements in one round trip (txid_current()
	// first in file mode), waits on row locks included.
	Exec float64 `json:"exec"`
	// Append: the change-file append before COMMIT (prepared protocol:
	// encoding and Writer.Prepare), while the row locks are held.
	Append float64 `json:"append"`
	// Commit: the database's COMMIT.
	Commit float64 `json:"commit"`
	// After: the change-file work after COMMIT (Prepared.Commit's wait for
	// the fsync; or encoding and Writer.Commit for after-commit).
	After float64 `json:"after"`
}

// Total is a transaction's mean wall time.
func (s *TxStages) Total() float64 { return s.Exec + s.Append + s.Commit + s.After }

// Latency holds commit-to-visible percentiles in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	Unseen  int     `json:"unseen"`
	P50     float64 `json:"p50_ms"`
	P95     float64 `json:"p95_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

// ModeResult is one mode's figures.
type ModeResult struct {
	Mode string `json:"mode"`
	// Load: the legacy at full speed, capture on, shipping off.
	Load Phase `json:"load"`
	// Drain: shipping the load phase's backlog, legacy idle.
	Drain *Phase `json:"drain,omitempty"`
	// Apply: the receiver applying the backlog (file mode).
	Apply *Phase `json:"apply,omitempty"`
	// Concurrent: the legacy at full speed with shipping running.
	Concurrent *Phase `json:"concurrent,omitempty"`
	// ConcurrentBaseline: the none mode in rounds alternating with
	// Concurrent's.
	ConcurrentBaseline *Phase `json:"concurrent_baseline,omitempty"`
	// Paced: the legacy at the fixed latency rate, shipping running.
	Paced *Phase `json:"paced,omitempty"`
	// LatencyJS: commit to readable in JetStream; LatencyReceiver: commit
	// to applied by the receiver (file mode).
	LatencyJS       *Latency `json:"latency_jetstream,omitempty"`
	LatencyReceiver *Latency `json:"latency_receiver,omitempty"`
	// Wire: what the stream received over the whole run.
	WireMessages int64   `json:"wire_messages"`
	WireBytes    int64   `json:"wire_bytes"`
	RawBytes     int64   `json:"raw_bytes"`
	Compression  float64 `json:"compression_ratio"`

	// Derived figures (see Derive).
	OverheadPct float64 `json:"overhead_pct"`
	// OverheadRoundsSD is the standard deviation, in percentage points,
	// of the overhead computed round by round (each round's tx/s against
	// none's in the same round).
	OverheadRoundsSD      float64 `json:"overhead_rounds_sd"`
	ConcurrentOverheadPct float64 `json:"concurrent_overhead_pct"`
	ConcurrentRoundsSD    float64 `json:"concurrent_overhead_rounds_sd"`
	BytesPerChange        float64 `json:"legacy_bytes_per_change"`
	WALPerChange          float64 `json:"wal_bytes_per_change"`
	DataPerChange         float64 `json:"data_bytes_per_change"`
	FilePerChange         float64 `json:"file_bytes_per_change"`
	ShipBytesPerChange    float64 `json:"shipping_legacy_bytes_per_change"`
	LegacyCPUPer1k        float64 `json:"legacy_cpu_s_per_1k"`
	LegacyDBCPUPer1k      float64 `json:"legacy_db_cpu_s_per_1k"`
	LegacyAppCPUPer1k     float64 `json:"legacy_app_cpu_s_per_1k"`
	ShipperCPUPer1k       float64 `json:"shipper_cpu_s_per_1k"`
	ShipDBCPUPer1k        float64 `json:"shipping_db_cpu_s_per_1k"`
	// LiveShipCPUPer1k is what shipping costs in CPU while the legacy
	// runs (small batches): this process's CPU per change in the
	// concurrent phase (plus child processes and PostgreSQL) less the
	// same in the load phase.
	LiveShipCPUPer1k   float64 `json:"live_shipping_cpu_s_per_1k"`
	ReceiverCPUPer1k   float64 `json:"receiver_cpu_s_per_1k"`
	ShipChangesPerSec  float64 `json:"ship_max_changes_per_sec"`
	ApplyChangesPerSec float64 `json:"apply_max_changes_per_sec"`
	WireBytesPerChange float64 `json:"wire_bytes_per_change"`

	// InitialChanges are the initial rows the file mode writes to its
	// change files before the legacy starts (shipped in the drain).
	InitialChanges int64 `json:"initial_changes,omitempty"`
	// WriterProtocol is the file mode's (WriterProtocol.String).
	WriterProtocol string `json:"writer_protocol,omitempty"`
	// StateCheck compares the receiver's rows with the database's after
	// every phase with a receiver (file mode); OrderCheck counts the
	// change files' frames out of the database's commit order.
	StateCheck *StateCheck `json:"state_check,omitempty"`
	OrderCheck *OrderCheck `json:"order_check,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Spread returns the relative standard deviation of the rounds' tx/s, in
// percent (0 with fewer than two rounds).
func (p *Phase) Spread() float64 {
	n := float64(len(p.SliceTxPerSec))
	if n < 2 {
		return 0
	}
	var sum, sq float64
	for _, v := range p.SliceTxPerSec {
		sum += v
	}
	mean := sum / n
	if mean == 0 {
		return 0
	}
	for _, v := range p.SliceTxPerSec {
		sq += (v - mean) * (v - mean)
	}
	return 100 * math.Sqrt(sq/(n-1)) / mean
}

// pairedSD returns the standard deviation of the round-by-round overheads
// 100*(1 - a[i]/b[i]), in percentage points.
func pairedSD(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 {
		return 0
	}
	var d []float64
	for i := range a {
		if b[i] > 0 {
			d = append(d, 100*(1-a[i]/b[i]))
		}
	}
	if len(d) < 2 {
		return 0
	}
	var sum, sq float64
	for _, v := range d {
		sum += v
	}
	mean := sum / float64(len(d))
	for _, v := range d {
		sq += (v - mean) * (v - mean)
	}
	return math.Sqrt(sq / float64(len(d)-1))
}

func per(n float64, changes int64) float64 {
	if changes <= 0 {
		return 0
	}
	return n / float64(changes)
}

// derive computes the derived figures of every mode against base (none).
func derive(modes []ModeResult) {
	var base *ModeResult
	for i := range modes {
		if modes[i].Mode == string(ModeNone) {
			base = &modes[i]
		}
	}
	for i := range modes {
		m := &modes[i]
		l := m.Load
		if base != nil && base.Load.TxPerSec > 0 {
			m.OverheadPct = 100 * (1 - l.TxPerSec/base.Load.TxPerSec)
			m.OverheadRoundsSD = pairedSD(l.SliceTxPerSec, base.Load.SliceTxPerSec)
			if c, b := m.Concurrent, m.ConcurrentBaseline; c != nil && b != nil && b.TxPerSec > 0 {
				m.ConcurrentOverheadPct = 100 * (1 - c.TxPerSec/b.TxPerSec)
				m.ConcurrentRoundsSD = pairedSD(c.SliceTxPerSec, b.SliceTxPerSec)
			} else if c != nil {
				m.ConcurrentOverheadPct = 100 * (1 - c.TxPerSec/base.Load.TxPerSec)
			}
		}
		m.WALPerChange = per(float64(l.WALBytes), l.Changes)
		m.DataPerChange = per(float64(l.DataBytes), l.Changes)
		m.FilePerChange = per(float64(l.FileBytes), l.Changes)
		if m.Drain != nil {
			m.ShipBytesPerChange = per(float64(m.Drain.WALBytes+m.Drain.DataBytes), l.Changes)
			m.ShipperCPUPer1k = 1000 * per(m.Drain.ProcCPU+m.Drain.ChildCPU, m.Drain.Changes)
			m.ShipDBCPUPer1k = 1000 * per(m.Drain.DBCPU, m.Drain.Changes)
			m.ShipChangesPerSec = m.Drain.ChangesPerSec
		}
		if m.Apply != nil {
			m.ReceiverCPUPer1k = 1000 * per(m.Apply.ProcCPU, m.Apply.Changes)
			m.ApplyChangesPerSec = m.Apply.ChangesPerSec
		}
		m.BytesPerChange = m.WALPerChange + m.DataPerChange + m.FilePerChange + m.ShipBytesPerChange
		m.LegacyDBCPUPer1k = 1000 * per(l.DBCPU, l.Changes)
		m.LegacyAppCPUPer1k = 1000 * per(l.ProcCPU, l.Changes)
		m.LegacyCPUPer1k = m.LegacyDBCPUPer1k + m.LegacyAppCPUPer1k
		if c := m.Concurrent; c != nil && c.Changes > 0 {
			m.LiveShipCPUPer1k = 1000*per(c.ProcCPU+c.ChildCPU+c.DBCPU, c.Changes) - m.LegacyCPUPer1k
		}
		if m.WireBytes > 0 {
			m.Compression = float64(m.RawBytes) / float64(m.WireBytes)
		}
		total := l.Changes + m.InitialChanges
		for _, p := range []*Phase{m.Concurrent, m.Paced} {
			if p != nil {
				total += p.Changes
			}
		}
		m.WireBytesPerChange = per(float64(m.WireBytes), total)
	}
}
