package ui

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferrysync/ferry/receiver/api"
)

func status(changes uint64, errs ...string) api.Status {
	st := api.Status{Ready: len(errs) == 0}
	st.Sources = []api.SourceStatus{{Source: "shop", State: "ok", Changes: changes}}
	for i, e := range errs {
		st.Sources = append(st.Sources, api.SourceStatus{Source: fmt.Sprintf("s%d", i), State: "stopped", Error: e,
			ErrorFile: fmt.Sprintf("s%d-00000000000000000001.ferry", i), ErrorOffset: int64(100 + i)})
	}
	return st
}

// TestHistoryRing: one sample per interval, at most window/interval of
// them (the oldest dropped), returned oldest first and filtered by time.
func TestHistoryRing(t *testing.T) {
	h := NewHistory(time.Second, 10*time.Second) // 10 samples
	t0 := time.Unix(1_000_000, 0)
	for i := 0; i < 25; i++ {
		h.Record(t0.Add(time.Duration(i)*time.Second), status(uint64(i)))
		// A second call within the interval adds nothing.
		h.Record(t0.Add(time.Duration(i)*time.Second+100*time.Millisecond), status(999))
	}
	all := h.Since(time.Time{})
	if got, want := len(all), 10; got != want {
		t.Fatalf("%d samples, want %d", got, want)
	}
	for i, s := range all {
		if got, want := s.Sources[0].Changes, uint64(15+i); got != want {
			t.Fatalf("sample %d: changes %d, want %d (oldest first, the last 10 kept)", i, got, want)
		}
	}
	if got := h.Since(t0.Add(21 * time.Second)); len(got) != 3 || got[0].Sources[0].Changes != 22 {
		t.Fatalf("since 21 s: %+v", got)
	}
}

// TestHistorySourcesBounded: a sample keeps at most MaxSources sources and
// says how many it dropped.
func TestHistorySourcesBounded(t *testing.T) {
	h := NewHistory(time.Second, time.Minute)
	var st api.Status
	for i := 0; i < MaxSources+7; i++ {
		st.Sources = append(st.Sources, api.SourceStatus{Source: fmt.Sprint(i)})
	}
	h.Record(time.Now(), st)
	s := h.Since(time.Time{})[0]
	if len(s.Sources) != MaxSources || s.Dropped != 7 {
		t.Fatalf("%d sources, %d dropped; want %d, 7", len(s.Sources), s.Dropped, MaxSources)
	}
}

// TestHistoryErrors: errors are kept after they clear (inactive), repeats
// are one entry, newest first, at most MaxErrors, with file and offset.
func TestHistoryErrors(t *testing.T) {
	h := NewHistory(time.Second, time.Minute)
	t0 := time.Unix(1_000_000, 0)
	h.Record(t0, status(1, "corrupt at 100"))
	h.Record(t0.Add(time.Second), status(2, "corrupt at 100"))
	h.Record(t0.Add(2*time.Second), status(3))
	errs := h.Errors()
	if len(errs) != 1 {
		t.Fatalf("errors: %+v; want one", errs)
	}
	e := errs[0]
	if e.Active || e.Source != "s0" || e.File != "s0-00000000000000000001.ferry" || e.Offset == nil || *e.Offset != 100 ||
		!e.FirstSeen.Equal(t0) || !e.LastSeen.Equal(t0.Add(time.Second)) {
		t.Fatalf("cleared error: %+v", e)
	}
	for i := 0; i < MaxErrors+5; i++ {
		h.Record(t0.Add(time.Duration(3+i)*time.Second), status(4, fmt.Sprint("error ", i)))
	}
	errs = h.Errors()
	if len(errs) != MaxErrors || errs[0].Error != fmt.Sprint("error ", MaxErrors+4) || !errs[0].Active || errs[1].Active {
		t.Fatalf("%d errors, newest %+v, next %+v", len(errs), errs[0], errs[1])
	}
}
