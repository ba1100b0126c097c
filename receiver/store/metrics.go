package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of Pebble's state (compactions in
// progress and their debt, L0 files, memtables, disk use, block cache hits)
// and of the change log's files.
// Each scrape reads Pebble's metrics once.
func (s *Store) Collector() prometheus.Collector { return &collector{s: s} }

type collector struct{ s *Store }

var (
	descCompactions = prometheus.NewDesc("ferry_receiver_pebble_compactions_in_progress", "Pebble compactions running.", nil, nil)
	descCompacted   = prometheus.NewDesc("ferry_receiver_pebble_compactions_total", "Pebble compactions completed.", nil, nil)
	descStalled     = prometheus.NewDesc("ferry_receiver_pebble_write_stall_seconds_total", "Time commits waited for Pebble (a full memtable waiting for its flush).", nil, nil)
	descDebt        = prometheus.NewDesc("ferry_receiver_pebble_compaction_debt_bytes", "Bytes Pebble estimates it must compact to reach a stable shape.", nil, nil)
	descL0          = prometheus.NewDesc("ferry_receiver_pebble_l0_files", "Tables in Pebble's level 0 (read amplification).", nil, nil)
	descMem         = prometheus.NewDesc("ferry_receiver_pebble_memtable_bytes", "Bytes allocated by Pebble's memtables.", nil, nil)
	descDisk        = prometheus.NewDesc("ferry_receiver_pebble_disk_bytes", "Bytes Pebble uses on disk (rows, positions, the change log's index).", nil, nil)
	descLogDisk     = prometheus.NewDesc("ferry_receiver_changelog_disk_bytes", "Bytes the change log's files use on disk.", nil, nil)
	descLogFiles    = prometheus.NewDesc("ferry_receiver_changelog_files", "Change log files on disk.", nil, nil)
	descHits        = prometheus.NewDesc("ferry_receiver_pebble_block_cache_hits_total", "Pebble block cache hits.", nil, nil)
	descMisses      = prometheus.NewDesc("ferry_receiver_pebble_block_cache_misses_total", "Pebble block cache misses.", nil, nil)
	descStale       = prometheus.NewDesc("ferry_receiver_stale_changes_skipped_total", "Changes not applied because the store holds a newer write of the row (row guard).", nil, nil)
	descCross       = prometheus.NewDesc("ferry_receiver_unversioned_cross_source_writes_total", "Changes applied over another source's write of the row without row versions on both sides: the row depends on arrival order.", nil, nil)
	descReads       = prometheus.NewDesc("ferry_receiver_row_guard_reads_total", "Stored rows the row guard read to compare a change against (versioned changes, late prepared applies, tables two sources write).", nil, nil)
	descTombs       = prometheus.NewDesc("ferry_receiver_tombstones", "Deletes' tombstones held (until --tombstone-retention).", nil, nil)
	descParked      = prometheus.NewDesc("ferry_receiver_parked_transactions", "Prepared transactions parked: their outcome frame not received yet.", []string{"source"}, nil)
	descParkedAge   = prometheus.NewDesc("ferry_receiver_parked_oldest_age_seconds", "How long the longest-parked prepared transaction has waited for its outcome (0: none parked).", nil, nil)
	descDiskFull    = prometheus.NewDesc("ferry_receiver_disk_full", "1 while the store's disk is full: a commit or a flush found no space (applying is paused, reads are served, it resumes when space returns).", nil, nil)
	descDiskFree    = prometheus.NewDesc("ferry_receiver_disk_free_bytes", "Bytes available on the store's file system (the store leaves 4 MiB of them free).", nil, nil)
	descCmdPending  = prometheus.NewDesc("ferry_receiver_commands_pending", "Write-back commands submitted through this receiver without an outcome yet.", nil, nil)
	descCmdOldest   = prometheus.NewDesc("ferry_receiver_commands_oldest_pending_seconds", "How long the oldest write-back command without an outcome has waited (0: none).", nil, nil)
	descCmdTotal    = prometheus.NewDesc("ferry_receiver_commands_total", "Write-back commands submitted through this receiver that got their outcome, by outcome (applied, rejected), since it started.", []string{"outcome"}, nil)
	descOutcomes    = prometheus.NewDesc("ferry_receiver_outcome_resolutions_total", "Resolutions of outcome frames: committed (applied), aborted (dropped), unmatched (nothing parked at that position: ignored).", []string{"decision"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCompactions, descCompacted, descStalled, descDebt, descL0, descMem, descDisk, descLogDisk, descLogFiles, descHits, descMisses, descStale, descCross, descReads, descTombs, descParked, descParkedAge, descOutcomes, descDiskFull, descDiskFree, descCmdPending, descCmdOldest, descCmdTotal} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.db.Metrics()
	ch <- prometheus.MustNewConstMetric(descCompactions, prometheus.GaugeValue, float64(m.Compact.NumInProgress))
	ch <- prometheus.MustNewConstMetric(descCompacted, prometheus.CounterValue, float64(m.Compact.Count))
	ch <- prometheus.MustNewConstMetric(descStalled, prometheus.CounterValue, c.s.WriteStalled().Seconds())
	ch <- prometheus.MustNewConstMetric(descDebt, prometheus.GaugeValue, float64(m.Compact.EstimatedDebt))
	ch <- prometheus.MustNewConstMetric(descL0, prometheus.GaugeValue, float64(m.Levels[0].TablesCount))
	ch <- prometheus.MustNewConstMetric(descMem, prometheus.GaugeValue, float64(m.MemTable.Size))
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(m.DiskSpaceUsage()))
	files, bytes := c.s.logs.usage()
	ch <- prometheus.MustNewConstMetric(descLogDisk, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(descLogFiles, prometheus.GaugeValue, float64(files))
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(m.BlockCache.Hits))
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(m.BlockCache.Misses))
	g := c.s.GuardStats()
	ch <- prometheus.MustNewConstMetric(descStale, prometheus.CounterValue, float64(g.Stale))
	ch <- prometheus.MustNewConstMetric(descCross, prometheus.CounterValue, float64(g.UnversionedCrossSource))
	ch <- prometheus.MustNewConstMetric(descReads, prometheus.CounterValue, float64(g.Reads))
	ch <- prometheus.MustNewConstMetric(descTombs, prometheus.GaugeValue, float64(g.Tombstones))
	if ps, err := c.s.ParkedStats(); err == nil {
		for src, n := range ps.BySource {
			ch <- prometheus.MustNewConstMetric(descParked, prometheus.GaugeValue, float64(n), src)
		}
		age := 0.0
		if !ps.Oldest.IsZero() {
			age = max(time.Since(ps.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(descParkedAge, prometheus.GaugeValue, age)
	}
	full := 0.0
	if c.s.DiskFull() != nil {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(descDiskFull, prometheus.GaugeValue, full)
	if free, ok := c.s.space.free(c.s.dir); ok {
		ch <- prometheus.MustNewConstMetric(descDiskFree, prometheus.GaugeValue, float64(free))
	}
	oc := c.s.OutcomeStats()
	cs := c.s.CommandStats()
	ch <- prometheus.MustNewConstMetric(descCmdPending, prometheus.GaugeValue, float64(cs.Pending))
	oldest := 0.0
	if !cs.OldestPending.IsZero() {
		oldest = max(time.Since(cs.OldestPending).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(descCmdOldest, prometheus.GaugeValue, oldest)
	ch <- prometheus.MustNewConstMetric(descCmdTotal, prometheus.CounterValue, float64(cs.Applied), "applied")
	ch <- prometheus.MustNewConstMetric(descCmdTotal, prometheus.CounterValue, float64(cs.Rejected), "rejected")
	ch <- prometheus.MustNewConstMetric(descOutcomes, prometheus.CounterValue, float64(oc.Committed), "committed")
	ch <- prometheus.MustNewConstMetric(descOutcomes, prometheus.CounterValue, float64(oc.Aborted), "aborted")
	ch <- prometheus.MustNewConstMetric(descOutcomes, prometheus.CounterValue, float64(oc.Unmatched), "unmatched")
}
