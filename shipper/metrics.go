package shipper

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the shipper's Prometheus metrics, labelled by source, so that
// several Shippers of one process share them. Register them on a registry
// you create (never the global default).
type Metrics struct {
	records         *prometheus.CounterVec
	frames          *prometheus.CounterVec
	rawBytes        *prometheus.CounterVec
	compressedBytes *prometheus.CounterVec
	batches         *prometheus.CounterVec
	publishLatency  *prometheus.HistogramVec
	backlogBytes    *prometheus.GaugeVec
	backlogSegments *prometheus.GaugeVec
	lagSeconds      *prometheus.GaugeVec
	errors          *prometheus.CounterVec
	shippedSegment  *prometheus.GaugeVec
	shippedOffset   *prometheus.GaugeVec
	tornBytes       *prometheus.CounterVec
	partialBytes    *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	src := []string{"source"}
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_records_total",
			Help: "Changes acknowledged by JetStream."}, src),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_frames_total",
			Help: "Frames (transactions, heartbeats, seals) acknowledged by JetStream."}, src),
		rawBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_raw_bytes_total",
			Help: "Bytes of change files acknowledged by JetStream, before compression."}, src),
		compressedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_compressed_bytes_total",
			Help: "Message body bytes acknowledged by JetStream."}, src),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_batches_total",
			Help: "Messages acknowledged by JetStream."}, src),
		publishLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_ship_publish_seconds",
			Help:    "Time from publish to JetStream acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, src),
		backlogBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_ship_backlog_bytes",
			Help: "Bytes of change files not yet acknowledged by JetStream."}, src),
		backlogSegments: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_ship_backlog_segments",
			Help: "Segments holding bytes not yet acknowledged by JetStream."}, src),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_ship_lag_seconds",
			Help: "Age of the newest acknowledged frame while a backlog remains; 0 when caught up."}, src),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_errors_total",
			Help: "Errors by kind: publish, reconnect, lease, fenced, corruption, stream_behind, stream_hole, stream_lost (the stream vanished and was re-created), gap (segments the stream needs are gone from disk), retention, checkpoint."}, []string{"source", "kind"}),
		shippedSegment: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_ship_acked_segment",
			Help: "Segment of the acknowledged position."}, src),
		shippedOffset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_ship_acked_offset",
			Help: "Offset of the acknowledged position in its segment."}, src),
		tornBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ship_torn_bytes_total",
			Help: "Torn bytes found at the end of segments abandoned by a crashed writer (not shipped)."}, src),
		partialBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_ship_partial_frame_bytes",
			Help: "Bytes of a partial frame the shipper has been waiting at for longer than a few polls at the end of the newest segment (a writer in the middle of a write, or one that crashed and has not restarted); 0 otherwise."}, src),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.records, m.frames, m.rawBytes, m.compressedBytes, m.batches,
			m.publishLatency, m.backlogBytes, m.backlogSegments, m.lagSeconds, m.errors, m.shippedSegment,
			m.shippedOffset, m.tornBytes, m.partialBytes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// sourceMetrics are the metrics of one source, resolved once.
type sourceMetrics struct {
	m               *Metrics
	source          string
	records         prometheus.Counter
	frames          prometheus.Counter
	rawBytes        prometheus.Counter
	compressedBytes prometheus.Counter
	batches         prometheus.Counter
	publishLatency  prometheus.Observer
	backlogBytes    prometheus.Gauge
	backlogSegments prometheus.Gauge
	lagSeconds      prometheus.Gauge
	shippedSegment  prometheus.Gauge
	shippedOffset   prometheus.Gauge
	tornBytes       prometheus.Counter
	partialBytes    prometheus.Gauge
}

func (m *Metrics) forSource(source string) *sourceMetrics {
	return &sourceMetrics{
		m: m, source: source,
		records:         m.records.WithLabelValues(source),
		frames:          m.frames.WithLabelValues(source),
		rawBytes:        m.rawBytes.WithLabelValues(source),
		compressedBytes: m.compressedBytes.WithLabelValues(source),
		batches:         m.batches.WithLabelValues(source),
		publishLatency:  m.publishLatency.WithLabelValues(source),
		backlogBytes:    m.backlogBytes.WithLabelValues(source),
		backlogSegments: m.backlogSegments.WithLabelValues(source),
		lagSeconds:      m.lagSeconds.WithLabelValues(source),
		shippedSegment:  m.shippedSegment.WithLabelValues(source),
		shippedOffset:   m.shippedOffset.WithLabelValues(source),
		tornBytes:       m.tornBytes.WithLabelValues(source),
		partialBytes:    m.partialBytes.WithLabelValues(source),
	}
}

func (sm *sourceMetrics) error(kind string) {
	sm.m.errors.WithLabelValues(sm.source, kind).Inc()
}
