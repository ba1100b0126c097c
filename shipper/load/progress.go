package load

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ProgressPrinter returns a Config.Progress that writes to w: on a
// terminal (tty) one bar per table redrawn in place (rows, rows/s, ETA);
// otherwise a plain line at most every interval, and one at the end.
func ProgressPrinter(w io.Writer, tty bool, interval time.Duration) func(Progress) {
	var mu sync.Mutex
	var last time.Time
	return func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if tty {
			fmt.Fprint(w, "\r"+bar(p)+"\x1b[K")
			if p.Done {
				fmt.Fprintln(w)
			}
			return
		}
		if !p.Done && time.Since(last) < interval {
			return
		}
		last = time.Now()
		fmt.Fprintln(w, line(p))
	}
}

func line(p Progress) string {
	state := "loading"
	if p.Done {
		state = "done"
	}
	s := fmt.Sprintf("load %s table=%s load=%s rows=%d", state, p.Table, p.Load, p.Rows)
	if p.Estimate >= 0 {
		s += fmt.Sprintf(" estimate=%d", p.Estimate)
	}
	s += fmt.Sprintf(" chunks=%d rows_per_s=%.0f elapsed=%s", p.Chunks, p.Rate, p.Elapsed.Round(time.Millisecond))
	if p.ETA > 0 {
		s += " eta=" + p.ETA.Round(time.Second).String()
	}
	return s
}

func bar(p Progress) string {
	const width = 30
	frac := 0.0
	if p.Estimate > 0 {
		frac = min(float64(p.Rows)/float64(p.Estimate), 1)
	}
	if p.Done {
		frac = 1
	}
	n := int(frac * width)
	b := "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
	s := fmt.Sprintf("%s %s %s rows", p.Table, b, count(p.Rows))
	if p.Estimate >= 0 {
		s += " of ~" + count(p.Estimate)
	}
	s += fmt.Sprintf("  %s rows/s", count(int64(p.Rate)))
	switch {
	case p.Done:
		s += "  done in " + p.Elapsed.Round(time.Millisecond).String()
	case p.ETA > 0:
		s += "  ETA " + p.ETA.Round(time.Second).String()
	}
	return s
}

// count renders n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
