package audit

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
)

// Latency histograms of the hourly rollup (see rollup.go) count
// milliseconds in log-linear buckets: every value below 16 ms has a bucket
// of its own, and each power of two above is split into 8 equal buckets, so
// a bucket is never wider than 1/8 of its lower bound (12.5%), and its
// midpoint is within 6.25% of any value in it. That bounds the error of a
// percentile read from a rollup; 304 buckets reach 2^40 ms.
const (
	// HistBuckets is the number of histogram buckets.
	HistBuckets = histLinear + (histMaxBits-histSubBits)*histSub
	// MaxHistValue is the largest value counted as itself; larger values
	// (and negative ones, counted as 0) are clamped.
	MaxHistValue = 1<<histMaxBits - 1

	histSubBits = 4                // values below 1<<histSubBits have their own bucket
	histLinear  = 1 << histSubBits // 16
	histSub     = histLinear / 2   // buckets per power of two above
	histMaxBits = 40
)

// HistBucket returns the bucket of a value in milliseconds.
func HistBucket(v int64) int {
	switch {
	case v <= 0:
		return 0
	case v < histLinear:
		return int(v)
	case v > MaxHistValue:
		v = MaxHistValue
	}
	n := bits.Len64(uint64(v)) // >= 5
	sub := int(v >> (n - 4))   // 8..15: the top four bits
	return histLinear + (n-5)*histSub + sub - histSub
}

// HistBounds returns the values bucket i counts: lo <= v < hi.
func HistBounds(i int) (lo, hi int64) {
	if i < histLinear {
		return int64(i), int64(i) + 1
	}
	i -= histLinear
	shift := i/histSub + 1
	sub := int64(i%histSub + histSub)
	return sub << shift, (sub + 1) << shift
}

// HistValue returns the value a percentile falling in bucket i reports:
// the bucket's midpoint, exact below 16 ms.
func HistValue(i int) int64 {
	lo, hi := HistBounds(i)
	return (lo + hi - 1) / 2
}

// Hist is a sparse histogram: bucket and count pairs in bucket order. The
// writer keeps one per rollup row and batch, small and allocation-free once
// its slice has grown.
type Hist []HistCount

// HistCount is one bucket of a Hist.
type HistCount struct {
	Bucket uint16
	Count  uint64
}

// Add counts one value.
func (h *Hist) Add(v int64) {
	b := uint16(HistBucket(v))
	i, found := slices.BinarySearchFunc(*h, b, func(c HistCount, b uint16) int { return int(c.Bucket) - int(b) })
	if found {
		(*h)[i].Count++
		return
	}
	*h = slices.Insert(*h, i, HistCount{Bucket: b, Count: 1})
}

// Merge adds o's counts to h.
func (h *Hist) Merge(o Hist) {
	for _, c := range o {
		i, found := slices.BinarySearchFunc(*h, c.Bucket, func(x HistCount, b uint16) int { return int(x.Bucket) - int(b) })
		if found {
			(*h)[i].Count = addSatU((*h)[i].Count, c.Count)
		} else {
			*h = slices.Insert(*h, i, c)
		}
	}
}

// AppendEncoded appends h as stored in the rollup: for each bucket, the
// uvarint of its distance from the previous one (the first from 0), then
// the uvarint of its count. An empty histogram is an empty BLOB.
func (h Hist) AppendEncoded(dst []byte) []byte {
	prev := 0
	for _, c := range h {
		dst = binary.AppendUvarint(dst, uint64(int(c.Bucket)-prev))
		dst = binary.AppendUvarint(dst, c.Count)
		prev = int(c.Bucket)
	}
	return dst
}

var errBadHist = errors.New("malformed histogram")

// DecodeHist calls fn for each bucket of an encoded histogram, in bucket
// order. A malformed encoding (another writer, a damaged file) stops with an
// error after the buckets decoded so far.
func DecodeHist(b []byte, fn func(bucket int, count uint64)) error {
	bucket := 0
	for len(b) > 0 {
		d, n := binary.Uvarint(b)
		if n <= 0 || d >= HistBuckets {
			return errBadHist
		}
		b = b[n:]
		c, n := binary.Uvarint(b)
		if n <= 0 {
			return errBadHist
		}
		b = b[n:]
		bucket += int(d)
		if bucket >= HistBuckets {
			return errBadHist
		}
		fn(bucket, c)
	}
	return nil
}

// mergeHists merges two encoded histograms into dst (the rollup upsert's
// llm_hist_merge). Malformed input is an error, so a damaged row fails its
// batch's rollup rather than spreading.
func mergeHists(dst, a, b []byte) ([]byte, error) {
	var counts [HistBuckets]uint64
	add := func(bucket int, c uint64) { counts[bucket] = addSatU(counts[bucket], c) }
	if err := DecodeHist(a, add); err != nil {
		return nil, err
	}
	if err := DecodeHist(b, add); err != nil {
		return nil, err
	}
	prev := 0
	for i, c := range counts {
		if c == 0 {
			continue
		}
		dst = binary.AppendUvarint(dst, uint64(i-prev))
		dst = binary.AppendUvarint(dst, c)
		prev = i
	}
	return dst, nil
}

func addSatU(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return ^uint64(0)
}
