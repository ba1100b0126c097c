package consume

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the consumer's Prometheus metrics.
type Metrics struct {
	Changes      *prometheus.CounterVec
	Transactions *prometheus.CounterVec
	Bytes        *prometheus.CounterVec
	Messages     *prometheus.CounterVec
	Skipped      *prometheus.CounterVec
	Errors       *prometheus.CounterVec
	Blocked      *prometheus.CounterVec
	Stopped      *prometheus.GaugeVec
	Lag          *prometheus.GaugeVec
	Pending      prometheus.Gauge
	CommitTime   prometheus.Histogram
	Rescans      prometheus.Counter
	LoadRows     *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_applied_changes_total",
			Help: "Changes applied to the store."}, []string{"source"}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_applied_transactions_total",
			Help: "Transactions applied to the store."}, []string{"source"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_applied_bytes_total",
			Help: "Frame bytes applied (transactions, heartbeats, seals)."}, []string{"source"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_messages_total",
			Help: "Stream messages read."}, []string{"source"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_skipped_frames_total",
			Help: "Frames skipped because they were already applied (redelivered, republished, overlapping)."}, []string{"source"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_errors_total",
			Help: "Messages that stopped a source, by kind (gap, corrupt, header)."}, []string{"source", "kind"}),
		Blocked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_blocked_messages_total",
			Help: "Messages of a stopped source that could not be applied (they do not continue from its position)."}, []string{"source"}),
		Stopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_receiver_source_stopped",
			Help: "1 while a source is stopped by an error."}, []string{"source"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_receiver_lag_seconds",
			Help: "Seconds since the time of the source's last applied frame (commit or heartbeat)."}, []string{"source"}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ferry_receiver_stream_pending_messages",
			Help: "Messages in the stream not yet delivered to this receiver."}),
		CommitTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ferry_receiver_apply_seconds",
			Help: "Time to commit one store batch.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}),
		Rescans: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_receiver_stream_rescans_total",
			Help: "Times the stream was rescanned from the start because its sequences went backwards."}),
		LoadRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_receiver_load_rows_total",
			Help: "Initial load rows by outcome: applied, dropped (a live change was newer), ingested (applied as sstables), duplicate."}, []string{"outcome"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Changes, m.Transactions, m.Bytes, m.Messages, m.Skipped, m.Errors, m.Blocked,
			m.Stopped, m.Lag, m.Pending, m.CommitTime, m.Rescans, m.LoadRows} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("consume: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
