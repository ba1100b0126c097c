package shipper

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of a Group read when Prometheus scrapes (so that they exist for
// every source from the start, where a counter by label appears only once
// something happened): whether each source stopped, and the space left on
// the file system holding its change files (the legacy's buffer while NATS
// or the shipper is down: when it fills, the legacy cannot write).
var (
	descSourceStopped = prometheus.NewDesc("ferry_ship_source_stopped",
		"1 once a source stopped shipping on an error (see /healthz and the log), else 0.", []string{"source"}, nil)
	descDiskFree = prometheus.NewDesc("ferry_ship_disk_free_bytes",
		"Bytes available to unprivileged users on the file system of the source's change files.", []string{"source"}, nil)
	descDiskSize = prometheus.NewDesc("ferry_ship_disk_size_bytes",
		"Size of the file system of the source's change files.", []string{"source"}, nil)
)

type groupCollector struct{ g *Group }

// Collector returns the Group's scrape-time metrics (ferry_ship_source_stopped,
// and on Linux ferry_ship_disk_free_bytes and ferry_ship_disk_size_bytes per
// source); register it next to the Shippers' Metrics.
func (g *Group) Collector() prometheus.Collector { return groupCollector{g} }

func (c groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSourceStopped
	ch <- descDiskFree
	ch <- descDiskSize
}

func (c groupCollector) Collect(ch chan<- prometheus.Metric) {
	c.g.mu.Lock()
	stopped := make(map[string]bool, len(c.g.failed))
	for s := range c.g.failed {
		stopped[s] = true
	}
	c.g.mu.Unlock()
	for _, sc := range c.g.sources {
		v := 0.0
		if stopped[sc.Name] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descSourceStopped, prometheus.GaugeValue, v, sc.Name)
		if free, size, ok := diskSpace(sc.Dir); ok {
			ch <- prometheus.MustNewConstMetric(descDiskFree, prometheus.GaugeValue, float64(free), sc.Name)
			ch <- prometheus.MustNewConstMetric(descDiskSize, prometheus.GaugeValue, float64(size), sc.Name)
		}
	}
}
