package load

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// bytesPerRow is what the retention check assumes a loaded row costs in the
// stream (a ~200-byte row, compressed).
const bytesPerRow = 64

// CheckRetention returns warnings, one per stream limit that could drop
// messages before a load of estimate rows at rate rows/s ends and receivers
// apply what was written meanwhile. The live changes' growth is the
// stream's average rate over what it holds (its first to last message).
// The duration counts twice the load's estimate plus ten minutes: receivers
// must still find the changes made during the load when they reach them.
func CheckRetention(info *jetstream.StreamInfo, estimate int64, rate float64, now time.Time) []string {
	if info == nil || rate <= 0 {
		return nil
	}
	if estimate < 0 {
		estimate = 0
	}
	c, s := info.Config, info.State
	dur := time.Duration(float64(estimate)/rate*float64(time.Second))*2 + 10*time.Minute
	// Live growth, from what the stream holds.
	var msgsPerSec, bytesPerSec float64
	if span := s.LastTime.Sub(s.FirstTime).Seconds(); span > 1 && s.Msgs > 1 {
		msgsPerSec = float64(s.Msgs) / span
		bytesPerSec = float64(s.Bytes) / span
	}
	growMsgs := uint64(msgsPerSec*dur.Seconds()) + uint64(estimate)/2000 + 1 // load messages: ~2000 rows each
	growBytes := uint64(bytesPerSec*dur.Seconds()) + uint64(estimate)*bytesPerRow
	var out []string
	what := fmt.Sprintf("the load (%d rows, about %s at %.0f rows/s) and receivers catching up", estimate, dur.Round(time.Second), rate)
	discard := "the oldest messages are dropped (discard old): changes made during the load would be lost to receivers that have not applied them"
	if c.Discard == jetstream.DiscardNew {
		discard = "new messages are refused (discard new): shippers and the load would stop"
	}
	if c.MaxAge > 0 && c.MaxAge < dur {
		out = append(out, fmt.Sprintf("stream %s keeps messages for max_age %s, less than %s need (%s): messages older than that are removed before receivers apply them; raise it for the load: nats stream edit %s --max-age %s",
			c.Name, c.MaxAge, what, dur.Round(time.Second), c.Name, (2*dur).Round(time.Minute)))
	}
	if c.MaxBytes > 0 && s.Bytes+growBytes > uint64(c.MaxBytes) {
		out = append(out, fmt.Sprintf("stream %s has max_bytes %d, holds %d and grows by about %d during %s: %s; raise it: nats stream edit %s --max-bytes %d",
			c.Name, c.MaxBytes, s.Bytes, growBytes, what, discard, c.Name, 2*(s.Bytes+growBytes)))
	}
	if c.MaxMsgs > 0 && s.Msgs+growMsgs > uint64(c.MaxMsgs) {
		out = append(out, fmt.Sprintf("stream %s has max_msgs %d, holds %d and grows by about %d during %s: %s; raise it: nats stream edit %s --max-msgs %d",
			c.Name, c.MaxMsgs, s.Msgs, growMsgs, what, discard, c.Name, 2*(s.Msgs+growMsgs)))
	}
	return out
}
