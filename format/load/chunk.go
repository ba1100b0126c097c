package load

import (
	"fmt"

	"github.com/ferrysync/ferry/format"
	"github.com/ferrysync/ferry/format/wire"
)

// CheckRows checks that tx may be the rows of chunk message h: not
// prepared, no command, no origin, tx id h.Load, and every change an insert
// or upsert of h.Table without a before image, with a key and an image
// (format.ValidateTx's rules apply on top).
func CheckRows(h *Header, tx *format.Tx) error {
	switch {
	case tx.Prepared:
		return fmt.Errorf("%w: rows marked prepared", ErrInvalid)
	case tx.Command != "":
		return fmt.Errorf("%w: rows with a command id", ErrInvalid)
	case tx.Origin != "":
		return fmt.Errorf("%w: rows with origin %q (load rows have none)", ErrInvalid, tx.Origin)
	case tx.ID != h.Load:
		return fmt.Errorf("%w: rows with transaction id %q, want the load id %q", ErrInvalid, tx.ID, h.Load)
	case len(tx.Changes) == 0:
		return fmt.Errorf("%w: no rows", ErrInvalid)
	}
	for i := range tx.Changes {
		c := &tx.Changes[i]
		switch {
		case c.Table != h.Table:
			return fmt.Errorf("%w: row %d of table %q in a load of %q", ErrInvalid, i, c.Table, h.Table)
		case c.Op != format.OpUpsert && c.Op != format.OpInsert:
			return fmt.Errorf("%w: row %d (key %q): op %s (load rows are upserts or inserts)", ErrInvalid, i, c.Key, c.Op)
		case c.Before != nil:
			return fmt.Errorf("%w: row %d (key %q): a before image", ErrInvalid, i, c.Key)
		}
	}
	return nil
}

// Encoder builds chunk message bodies. It is not safe for concurrent use;
// the Compressor it uses is.
type Encoder struct {
	c   *wire.Compressor
	raw []byte
}

// NewEncoder returns an Encoder compressing with c.
func NewEncoder(c *wire.Compressor) *Encoder { return &Encoder{c: c} }

// Chunk encodes tx, the rows of chunk message h, as one transaction frame
// (format.AppendTx) compressed with h.Codec, appends the body to dst and
// returns it. It sets h.Rows and h.RawLen.
func (e *Encoder) Chunk(dst []byte, h *Header, tx *format.Tx) ([]byte, error) {
	raw, err := AppendRows(e.raw[:0], h, tx)
	if err != nil {
		return dst, err
	}
	e.raw = raw
	return e.c.Compress(dst, raw, h.Codec)
}

// AppendRows appends tx, the rows of chunk message h, to dst as the one
// transaction frame of its raw body, and sets h.Rows and h.RawLen. The
// body is that frame compressed with h.Codec (wire.Compressor): Chunk does
// both; a loader that compresses on another goroutine calls them apart.
func AppendRows(dst []byte, h *Header, tx *format.Tx) ([]byte, error) {
	if h.Kind != KindChunk {
		return dst, fmt.Errorf("%w: %s is not a chunk", ErrInvalid, h.MsgID())
	}
	if err := CheckRows(h, tx); err != nil {
		return dst, fmt.Errorf("%s: %w", h.MsgID(), err)
	}
	start := len(dst)
	out, err := format.AppendTx(dst, tx)
	if err != nil {
		return dst, fmt.Errorf("load: %s: encoding rows: %w", h.MsgID(), err)
	}
	n := len(out) - start
	if n > MaxRawLen {
		return dst, fmt.Errorf("%w: %s: %d bytes of rows (max %d per message)", ErrInvalid, h.MsgID(), n, MaxRawLen)
	}
	h.Rows, h.RawLen = int64(len(tx.Changes)), n
	if err := h.check(); err != nil {
		return dst, fmt.Errorf("%w: %s: %v", ErrInvalid, h.MsgID(), err)
	}
	return out, nil
}

// RowLen returns how many bytes a row adds to a chunk's raw body (its
// encoded change): loaders use it to keep messages under a size.
func RowLen(table string, key, after []byte, version uint64) int {
	tx := format.Tx{Changes: []format.Change{{Table: table, Key: key, After: after, Version: version}}}
	// One change's payload minus the fixed transaction fields around it.
	return format.TxPayloadLen(&tx) - format.TxPayloadLen(&format.Tx{})
}

// FrameOverhead bounds a chunk body's raw size without its rows, for a load
// id of n bytes: frame header, commit time, flags, id, origin and a change
// count of up to 5 bytes.
func FrameOverhead(n int) int {
	return format.FrameHeaderLen + format.TxPayloadLen(&format.Tx{ID: string(make([]byte, n))}) + 4
}

// Decoder reads chunk message bodies without trusting them: it inflates no
// more than the header's Ferry-Raw-Len (at most MaxRawLen), checks the
// frame's CRC and decodes it with the change files' decoder. Not safe for
// concurrent use.
type Decoder struct {
	d   *wire.Decompressor
	raw []byte
}

// NewDecoder returns a Decoder.
func NewDecoder() (*Decoder, error) {
	d, err := wire.NewDecompressor()
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return &Decoder{d: d}, nil
}

// Close releases the decoder's resources.
func (d *Decoder) Close() { d.d.Close() }

// Chunk decodes the body of chunk message h into tx (reusing tx.Changes).
// tx's byte slices alias the Decoder's buffer until the next call: copy what
// must outlive it. Errors wrap ErrBody and name the message.
func (d *Decoder) Chunk(h *Header, body []byte, tx *format.Tx) error {
	if h.Kind != KindChunk {
		return fmt.Errorf("%w: %s is not a chunk", ErrBody, h.MsgID())
	}
	raw, err := d.d.Inflate(d.raw[:0], body, h.Codec, h.RawLen, h.MsgID())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBody, err)
	}
	d.raw = raw
	f, n, err := format.ParseFrame(raw)
	if err != nil {
		return fmt.Errorf("%w: %s: rows frame: %v", ErrBody, h.MsgID(), err)
	}
	if n != len(raw) {
		return fmt.Errorf("%w: %s: %d bytes after the rows frame (a chunk body is exactly one frame)", ErrBody, h.MsgID(), len(raw)-n)
	}
	if f.Type != format.FrameTx {
		return fmt.Errorf("%w: %s: a %s frame (want tx)", ErrBody, h.MsgID(), f.Type)
	}
	if err := format.DecodeTx(f.Payload, tx); err != nil {
		return fmt.Errorf("%w: %s: rows: %v", ErrBody, h.MsgID(), err)
	}
	if err := CheckRows(h, tx); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBody, h.MsgID(), err)
	}
	if int64(len(tx.Changes)) != h.Rows {
		return fmt.Errorf("%w: %s: %d rows, headers say %d", ErrBody, h.MsgID(), len(tx.Changes), h.Rows)
	}
	return nil
}
