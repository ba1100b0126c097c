package bench

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// watch follows the mode's stream from now on with an ordered consumer and
// reports to lat when each transaction version becomes readable there. The
// returned function stops it.
func watch(ctx context.Context, nc *nats.Conn, mode Mode, lat *latencies) (func(), error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, streamOf(mode))
	if err != nil {
		return nil, fmt.Errorf("bench: latency watcher: stream %s: %w", streamOf(mode), err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, fmt.Errorf("bench: latency watcher: %w", err)
	}
	var handle func(m jetstream.Msg)
	if mode == ModeFile {
		dec, err := wire.NewDecompressor()
		if err != nil {
			return nil, err
		}
		var raw []byte
		var tx format.Tx
		var out format.Outcome
		// A prepared transaction is readable once its outcome is:
		// prepared frames wait here, by position, for theirs.
		prepared := map[format.Position]int64{}
		handle = func(m jetstream.Msg) {
			now := time.Now().UnixNano()
			b, err := wire.ParseHeader(m.Headers())
			if err != nil || b.Parts > 1 {
				return // split frames: large transactions, not sampled
			}
			if raw, err = dec.Decompress(raw, m.Data(), &b); err != nil {
				return
			}
			for off, rest := b.From, raw; len(rest) > 0; {
				f, n, err := format.ParseFrame(rest)
				if err != nil {
					return
				}
				pos := format.Position{Segment: b.Segment, Offset: off}
				rest, off = rest[n:], off+int64(n)
				switch f.Type {
				case format.FrameTx:
					if format.DecodeTx(f.Payload, &tx) != nil {
						continue
					}
					v, err := strconv.ParseInt(tx.ID, 10, 64)
					switch {
					case err != nil:
					case tx.Prepared:
						prepared[pos] = v
					default:
						lat.visible(v, now)
					}
				case format.FrameOutcome:
					if format.DecodeOutcome(f.Payload, &out) != nil {
						continue
					}
					for _, r := range out.Resolutions {
						if v, ok := prepared[r.Prepared]; ok {
							delete(prepared, r.Prepared)
							if r.Decision == format.DecisionCommitted {
								lat.visible(v, now)
							}
						}
					}
				}
			}
		}
	} else {
		handle = func(m jetstream.Msg) {
			if v, ok := afterVersion(m.Data()); ok {
				lat.visible(v, time.Now().UnixNano())
			}
		}
	}
	cc, err := cons.Consume(handle, jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("bench: latency watcher: %w", err)
	}
	return cc.Stop, nil
}

// afterVersion finds the version column of a CDC message's after image.
func afterVersion(msg []byte) (int64, bool) {
	i := bytes.Index(msg, []byte(`"after":{`))
	if i < 0 {
		return 0, false
	}
	rest := msg[i:]
	j := bytes.Index(rest, []byte(`"version":`))
	if j < 0 {
		return 0, false
	}
	rest = rest[j+len(`"version":`):]
	k := 0
	for k < len(rest) && rest[k] >= '0' && rest[k] <= '9' {
		k++
	}
	v, err := strconv.ParseInt(string(rest[:k]), 10, 64)
	return v, err == nil
}
