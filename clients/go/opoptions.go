package dengine

import (
	"bytes"
	"fmt"
	"math"
	"strings"
)

// OpOption configures Range, RangeAll, RangePages, DeleteRange, Put, Watch
// and the transaction ops (OpRange, OpPut, OpDeleteRange). Each call accepts the
// options that make sense for it and refuses the others with
// ErrInvalidArgument (e.g. WithPrevKV on Range), so a misplaced option never
// goes unnoticed. WithConsistency is also an OpOption (for Range and
// RangeAll).
type OpOption interface{ applyOp(*opConfig) }

type opOptionFunc func(*opConfig)

func (f opOptionFunc) applyOp(c *opConfig) { f(c) }

// applyOp makes WithConsistency usable with Range and RangeAll.
func (o ReadOption) applyOp(c *opConfig) {
	c.use(optConsistency)
	o(&c.read)
}

// rangeMode says how the end of a range is given.
type rangeMode int

const (
	rangeSingle  rangeMode = iota // the key alone
	rangeEnd                      // [key, end)
	rangePrefix                   // every key starting with key
	rangeFromKey                  // every key >= key
)

// option names, for "does not apply" errors.
const (
	optRangeEnd    = "WithRangeEnd"
	optPrefix      = "WithPrefix"
	optFromKey     = "WithFromKey"
	optLimit       = "WithLimit"
	optKeysOnly    = "WithKeysOnly"
	optCountOnly   = "WithCountOnly"
	optPrevKV      = "WithPrevKV"
	optLease       = "WithLease"
	optConsistency = "WithConsistency"
	// watch-only options (watchoptions.go)
	optStartRevision  = "WithStartRevision"
	optWatchBuffer    = "WithWatchBuffer"
	optProgressNotify = "WithProgressNotify"
	optFilters        = "WithFilters"
	optResumeTimeout  = "WithResumeTimeout"
)

type opConfig struct {
	mode      rangeMode
	end       []byte
	limit     int
	keysOnly  bool
	countOnly bool
	prevKV    bool
	lease     LeaseID
	read      readConfig
	watch     watchConfig
	used      []string
	err       error
}

func (c *opConfig) use(name string) { c.used = append(c.used, name) }

// has reports whether the option named name was given.
func (c *opConfig) has(name string) bool {
	for _, u := range c.used {
		if u == name {
			return true
		}
	}
	return false
}

func (c *opConfig) setMode(name string, m rangeMode) {
	c.use(name)
	if c.mode != rangeSingle && c.mode != m && c.err == nil {
		c.err = newError(CodeInvalidArgument, fmt.Sprintf("%s conflicts with an earlier WithPrefix/WithRangeEnd/WithFromKey", name), nil)
	}
	c.mode = m
}

// WithRangeEnd makes the operation cover [key, end). end must sort after the
// key; "\x00" means every key >= key (same as WithFromKey).
func WithRangeEnd(end []byte) OpOption {
	return opOptionFunc(func(c *opConfig) {
		c.setMode(optRangeEnd, rangeEnd)
		c.end = end
	})
}

// WithPrefix makes the operation cover every key starting with the key (all
// keys for an empty key): [key, PrefixEnd(key)).
func WithPrefix() OpOption {
	return opOptionFunc(func(c *opConfig) { c.setMode(optPrefix, rangePrefix) })
}

// WithFromKey makes the operation cover every key >= the key (all keys for
// an empty key).
func WithFromKey() OpOption {
	return opOptionFunc(func(c *opConfig) { c.setMode(optFromKey, rangeFromKey) })
}

// WithLimit caps the pairs of one Range page (0: the server's maximum,
// MaxRangeLimit). For RangeAll and RangePages it is the page size.
func WithLimit(n int) OpOption {
	return opOptionFunc(func(c *opConfig) {
		c.use(optLimit)
		if (n < 0 || int64(n) > math.MaxUint32) && c.err == nil {
			c.err = newError(CodeInvalidArgument, fmt.Sprintf("WithLimit: limit must be in [0, %d], got %d", MaxRangeLimit, n), nil)
		}
		c.limit = n
	})
}

// WithKeysOnly returns keys and metadata without values.
func WithKeysOnly() OpOption {
	return opOptionFunc(func(c *opConfig) { c.use(optKeysOnly); c.keysOnly = true })
}

// WithCountOnly returns only the number of keys in the range (Count).
func WithCountOnly() OpOption {
	return opOptionFunc(func(c *opConfig) { c.use(optCountOnly); c.countOnly = true })
}

// WithPrevKV makes DeleteRange return the deleted pairs, and a Watch deliver
// each event with the key's previous state (WatchEvent.PrevKV; nil when the
// key did not exist before the event).
func WithPrevKV() OpOption {
	return opOptionFunc(func(c *opConfig) { c.use(optPrevKV); c.prevKV = true })
}

// WithLease attaches the key written by Put (or OpPut) to a lease: the key is
// deleted when the lease expires or is revoked. The lease must exist
// (ErrLeaseNotFound otherwise). A put without WithLease detaches the key from
// any lease it had.
func WithLease(id LeaseID) OpOption {
	return opOptionFunc(func(c *opConfig) { c.use(optLease); c.lease = id })
}

// Which options each call accepts.
var (
	rangeModeOpts    = []string{optRangeEnd, optPrefix, optFromKey}
	allowRange       = append([]string{optLimit, optKeysOnly, optCountOnly, optConsistency}, rangeModeOpts...)
	allowRangeAll    = append([]string{optLimit, optKeysOnly, optConsistency}, rangeModeOpts...)
	allowTxnRange    = append([]string{optLimit, optKeysOnly, optCountOnly}, rangeModeOpts...)
	allowDeleteRange = append([]string{optPrevKV}, rangeModeOpts...)
	allowPut         = []string{optLease}
	allowWatch       = append([]string{optStartRevision, optWatchBuffer, optPrevKV, optProgressNotify, optFilters, optResumeTimeout}, rangeModeOpts...)
)

// buildOp applies opts and refuses options that call does not take.
func buildOp(call string, opts []OpOption, allowed []string) (*opConfig, error) {
	c := &opConfig{read: readConfig{consistency: Linearizable}}
	for _, o := range opts {
		if o != nil {
			o.applyOp(c)
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	for _, u := range c.used {
		ok := false
		for _, a := range allowed {
			ok = ok || a == u
		}
		if !ok {
			return nil, newError(CodeInvalidArgument, fmt.Sprintf("%s does not apply to %s (it takes %s)", u, call, strings.Join(allowed, ", ")), nil)
		}
	}
	if err := c.read.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// bounds returns the wire (key, range_end) of the range, checked.
func (c *opConfig) bounds(key []byte) ([]byte, []byte, error) {
	switch c.mode {
	case rangePrefix:
		if key == nil {
			key = []byte{}
		}
		return key, PrefixEnd(key), nil
	case rangeFromKey:
		if key == nil {
			key = []byte{}
		}
		return key, []byte{0}, nil
	case rangeEnd:
		if len(c.end) == 0 {
			return nil, nil, newError(CodeInvalidArgument, "WithRangeEnd: end must not be empty (leave the option out to address the key alone)", nil)
		}
		if !(len(c.end) == 1 && c.end[0] == 0) && bytes.Compare(c.end, key) <= 0 {
			return nil, nil, newError(CodeInvalidArgument, fmt.Sprintf("range end %q must sort after the key %q", c.end, key), nil)
		}
		return key, c.end, nil
	}
	if err := checkKey("key", key); err != nil {
		return nil, nil, err
	}
	return key, nil, nil
}

// PrefixEnd returns the range end that makes [prefix, PrefixEnd(prefix))
// cover exactly the keys starting with prefix: the prefix with its last byte
// below 0xff incremented and the 0xff bytes after it dropped. For an empty
// or all-0xff prefix it returns "\x00" (every key >= prefix).
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}
