package shipper_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
	"github.com/ferrysync/ferry/shipper"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStages: the stages ferry status shows, read through the library: the
// end of the change files, the position the stream's last message names (a
// split frame counts once its last part is stored) and the lags between
// them counted in the files.
func TestStages(t *testing.T) {
	dir := t.TempDir()
	w, err := format.OpenWriter(dir, "shop", format.WithSync(format.SyncNone, 0))
	if err != nil {
		t.Fatal(err)
	}
	var pos []format.Position
	for i := 0; i < 5; i++ {
		p, err := w.Commit(&format.Tx{CommitTime: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC).UnixNano(),
			Changes: []format.Change{{Table: "t", Op: format.OpUpsert, Key: []byte{byte(i)}, After: []byte(`{}`)}, {Table: "t", Op: format.OpUpsert, Key: []byte{byte(i), 1}, After: []byte(`{}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		pos = append(pos, p)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	end := endOf(t, dir, "shop")

	disk, err := shipper.DiskStages(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := disk["shop"]; d == nil || d.Position() != end || !d.LastCommit.Equal(time.Date(2026, 1, 1, 0, 0, 4, 0, time.UTC)) {
		t.Fatalf("on disk %+v, want %v last commit 00:00:04", d, end)
	}

	_, nc := startServer(t, 0)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"p.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(b wire.Batch) {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "p.shop", Header: nats.Header(b.Header()), Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(i int) int64 { return time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC).UnixNano() }
	// The first two transactions whole, then the third split in two parts.
	publish(wire.Batch{Source: "shop", Segment: 1, From: pos[0].Offset, To: pos[2].Offset, Frames: 2, Changes: 4, LastCommit: commit(1), Parts: 1, RawLen: 1})
	split := wire.Batch{Source: "shop", Segment: 1, From: pos[2].Offset, To: pos[3].Offset, Frames: 1, Changes: 2, LastCommit: commit(2), Parts: 2, RawLen: 1, PrevEnd: -1}
	publish(split)
	for _, tc := range []struct {
		name    string
		publish func()
		want    format.Position
		records int64
	}{
		{"SplitFramePartOne", func() {}, pos[2], 6},
		{"SplitFrameWhole", func() { split.Part = 1; publish(split) }, pos[3], 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.publish()
			shipped, err := shipper.ShippedStages(ctx, js, "S", "p")
			if err != nil {
				t.Fatal(err)
			}
			if s := shipped["shop"]; s == nil || s.Position() != tc.want || s.Error != "" {
				t.Fatalf("shipped %+v, want %v", s, tc.want)
			}
			applied := map[string]*shipper.Stage{"shop": {Segment: 1, Offset: pos[0].Offset, LastCommit: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
			all := shipper.MergeStages(dir, disk, shipped, applied)
			if len(all) != 1 || all[0].ShipLag == nil || all[0].ApplyLag == nil {
				t.Fatalf("stages %+v, want shop with both lags", all)
			}
			if got, want := all[0].ShipLag.Records, tc.records; got != want {
				t.Errorf("ship lag %d records, want %d", got, want)
			}
			if got, want := all[0].ShipLag.Bytes, end.Offset-tc.want.Offset; got != want {
				t.Errorf("ship lag %d bytes, want %d", got, want)
			}
			if got, want := all[0].ApplyLag.Records, 10-tc.records; got != want {
				t.Errorf("apply lag %d records, want %d", got, want)
			}
		})
	}
}
