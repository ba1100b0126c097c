package format

import (
	"errors"
	"io"
	"os"
)

// SegmentDataSize returns where the data of the segment file at path ends:
// its size, less the space of a preallocated segment (SPEC.md, "Writers",
// step 3) that no frame reached yet. It reads the segment's frames to find
// their end; bytes after them that are neither zeros nor frames (a torn
// tail) count as data. The end and the bytes of change files are measured
// with it.
func SegmentDataSize(path string) (int64, error) {
	rd, f, err := OpenReader(path, 0)
	if err != nil {
		var pe *PositionError
		if errors.As(err, &pe) && errors.Is(err, ErrTornTail) {
			return pe.Offset, nil // a header being written
		}
		return 0, err
	}
	defer f.Close()
	for {
		_, err := rd.Next()
		if err == nil {
			continue
		}
		if err == io.EOF {
			return rd.End(), nil
		}
		fi, serr := f.Stat()
		if serr != nil {
			return 0, serr
		}
		return DataEnd(f, rd.End(), fi.Size())
	}
}

// EstimateDataSize estimates where the data of the segment file f, of size
// bytes, ends — size, less a preallocated tail of zeros — in a few reads: it
// looks for the first 4 KiB block after which every probed block is zeros,
// by bisection, then for the last byte that is not zero before it. A frame
// holding a whole block of zeros can make it stop short; for metrics (a
// backlog), not for positions (SegmentDataSize).
func EstimateDataSize(f *os.File, size int64) (int64, error) {
	const block = 4096
	var b [block]byte
	zero := func(off int64) (bool, error) {
		n, err := f.ReadAt(b[:min(block, size-off)], off)
		if err != nil && err != io.EOF {
			return false, err
		}
		return firstNonZero(b[:n]) < 0, nil
	}
	// Blocks [0, lo) hold data; blocks from hi on are zeros.
	lo, hi := int64(0), (size+block-1)/block
	if hi == 0 {
		return 0, nil
	}
	if z, err := zero((hi - 1) * block); err != nil || !z {
		return size, err // the last block holds data: nothing reserved is left
	}
	hi--
	for lo < hi {
		mid := lo + (hi-lo)/2
		z, err := zero(mid * block)
		if err != nil {
			return size, err
		}
		if z {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo == 0 {
		return 0, nil
	}
	return DataEnd(f, (lo-1)*block, lo*block)
}
