package report

import (
	"fmt"
	"html"
	"io"
	"math"

	"github.com/ferrysync/ferry/bench"
)

// barChart is a grouped vertical bar chart: one group per label, one bar
// per series in each group.
type barChart struct {
	title, unit string
	groups      []string
	series      []string
	values      [][]float64 // [group][series]; NaN: no bar
	// log draws the axis in powers of ten (for latencies that span
	// decades).
	log bool
}

// color returns the fill of series i.
func color(i int) string {
	return [...]string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"}[i%5]
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func (c *barChart) svg(w io.Writer) error {
	const (
		width, height0    = 860, 420
		left, right       = 90, 20
		top, bottom       = 50, 80
		plotW, plotH      = width - left - right, height0 - top - bottom
		groupGap, barGaps = 0.25, 0.05
	)
	max, min := 0.0, math.Inf(1)
	for _, g := range c.values {
		for _, v := range g {
			if !math.IsNaN(v) && v > max {
				max = v
			}
			if !math.IsNaN(v) && v > 0 && v < min {
				min = v
			}
		}
	}
	// height maps a value to a bar height in pixels.
	var height func(v float64) float64
	var ticks []float64
	if c.log {
		lo := math.Pow(10, math.Floor(math.Log10(math.Min(min, max))))
		hi := math.Pow(10, math.Ceil(math.Log10(max)))
		if math.IsInf(min, 1) || lo <= 0 {
			lo, hi = 0.1, 1
		}
		if hi <= lo {
			hi = lo * 10
		}
		span := math.Log10(hi) - math.Log10(lo)
		height = func(v float64) float64 {
			if v <= lo {
				return 1
			}
			return float64(plotH) * (math.Log10(v) - math.Log10(lo)) / span
		}
		for t := lo; t <= hi*1.0001; t *= 10 {
			ticks = append(ticks, t)
		}
	} else {
		max = niceMax(max)
		height = func(v float64) float64 { return float64(plotH) * v / max }
		for i := 0; i <= 5; i++ {
			ticks = append(ticks, max*float64(i)/5)
		}
	}
	var err error
	p := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, args...)
		}
	}
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height0, width, height0)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(c.title))
	for _, v := range ticks {
		y := float64(top+plotH) - height(v)
		if v == 0 {
			y = float64(top + plotH)
		}
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, left+plotW, y)
		p(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y, num(v))
	}
	unit := c.unit
	if c.log {
		unit += " (log scale)"
	}
	p(`<text transform="translate(16 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+plotH/2, html.EscapeString(unit))
	gw := float64(plotW) / float64(max1(len(c.groups)))
	bw := gw * (1 - groupGap) / float64(max1(len(c.series)))
	for gi, g := range c.groups {
		x0 := float64(left) + gw*float64(gi) + gw*groupGap/2
		for si := range c.series {
			v := c.values[gi][si]
			if math.IsNaN(v) {
				continue
			}
			h := height(v)
			x := x0 + bw*float64(si)
			y := float64(top+plotH) - h
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
				x+bw*barGaps/2, y, bw*(1-barGaps), h, color(si), html.EscapeString(g), html.EscapeString(c.series[si]), num(v), html.EscapeString(c.unit))
			p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", x+bw/2, y-3, num(v))
		}
		p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x0+gw*(1-groupGap)/2, top+plotH+18, html.EscapeString(g))
	}
	for si, s := range c.series {
		x := left + si*200
		p(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", x, height0-30, color(si))
		p(`<text x="%d" y="%d">%s</text>`+"\n", x+16, height0-20, html.EscapeString(s))
	}
	p("</svg>\n")
	return err
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// ThroughputSVG charts, per mode, the legacy's changes/s with shipping off
// and on, and the maximum shipping rate.
func ThroughputSVG(w io.Writer, res *bench.Results) error {
	c := &barChart{title: "Throughput per mode (" + res.Profile + " profile)", unit: "changes/s",
		series: []string{"legacy, shipping off", "legacy, shipping on", "max shipping (backlog drain)"}, log: true}
	for _, m := range res.Modes {
		if m.Error != "" {
			continue
		}
		row := []float64{m.Load.ChangesPerSec, math.NaN(), math.NaN()}
		if m.Concurrent != nil {
			row[1] = m.Concurrent.ChangesPerSec
		}
		if m.Drain != nil {
			row[2] = m.ShipChangesPerSec
		}
		c.groups = append(c.groups, m.Mode)
		c.values = append(c.values, row)
	}
	return c.svg(w)
}

// LatencySVG charts, per mode, the commit-to-visible percentiles.
func LatencySVG(w io.Writer, res *bench.Results) error {
	c := &barChart{title: fmt.Sprintf("Latency, commit to visible, at %s changes/s (%s profile)", num(res.Settings.LatencyRate), res.Profile),
		unit: "milliseconds", series: []string{"p50", "p95", "p99"}, log: true}
	add := func(name string, l *bench.Latency) {
		if l == nil || l.Samples == 0 {
			return
		}
		c.groups = append(c.groups, name)
		c.values = append(c.values, []float64{l.P50, l.P95, l.P99})
	}
	for _, m := range res.Modes {
		if m.Error != "" {
			continue
		}
		add(m.Mode+" → JetStream", m.LatencyJS)
		add(m.Mode+" → receiver", m.LatencyReceiver)
	}
	return c.svg(w)
}
