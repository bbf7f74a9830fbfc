package dengine

import (
	"fmt"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// WatchOption configures Watch and WatchPrefix. It is an OpOption: Watch
// takes WithStartRevision, WithWatchBuffer, WithPrevKV, WithProgressNotify,
// WithFilters, WithResumeTimeout and the range options WithPrefix,
// WithRangeEnd and WithFromKey, and refuses any other option with
// ErrInvalidArgument.
type WatchOption = OpOption

// WatchFilter names a kind of event a watch does not deliver.
type WatchFilter int

const (
	// FilterNoPut: do not deliver PUT events.
	FilterNoPut WatchFilter = WatchFilter(enginev1.WatchFilter_NO_PUT)
	// FilterNoDelete: do not deliver DELETE events.
	FilterNoDelete WatchFilter = WatchFilter(enginev1.WatchFilter_NO_DELETE)
)

func (f WatchFilter) String() string {
	switch f {
	case FilterNoPut:
		return "NO_PUT"
	case FilterNoDelete:
		return "NO_DELETE"
	}
	return fmt.Sprintf("WatchFilter(%d)", int(f))
}

type watchConfig struct {
	startRevision  uint64
	bufferSize     int
	progressNotify bool
	filters        []enginev1.WatchFilter
	// resumeTimeout bounds how long a broken watch keeps trying to
	// re-create itself; 0 = until the caller cancels.
	resumeTimeout time.Duration
}

// WithStartRevision delivers events with revision >= rev that are still in
// the server's watch history (ErrCompacted otherwise) before live events.
// 0 (the default) means only changes after the watch is created.
func WithStartRevision(rev uint64) WatchOption {
	return opOptionFunc(func(c *opConfig) { c.use(optStartRevision); c.watch.startRevision = rev })
}

// WithWatchBuffer sets the capacity of the event channel (default 64; must
// be >= 0).
func WithWatchBuffer(n int) WatchOption {
	return opOptionFunc(func(c *opConfig) {
		c.use(optWatchBuffer)
		if n < 0 && c.err == nil {
			c.err = newError(CodeInvalidArgument, fmt.Sprintf("WithWatchBuffer: capacity must be >= 0, got %d", n), nil)
		}
		c.watch.bufferSize = n
	})
}

// WithProgressNotify asks the server for progress notifications: when the
// watch has been idle for the server's progress interval it receives a
// WatchEvent with IsProgress() true and ProgressRevision set to the revision
// the watch has caught up to (every change up to it was delivered).
func WithProgressNotify() WatchOption {
	return opOptionFunc(func(c *opConfig) { c.use(optProgressNotify); c.watch.progressNotify = true })
}

// WithFilters drops the named kinds of event on the server (FilterNoPut,
// FilterNoDelete).
func WithFilters(filters ...WatchFilter) WatchOption {
	return opOptionFunc(func(c *opConfig) {
		c.use(optFilters)
		for _, f := range filters {
			if f != FilterNoPut && f != FilterNoDelete {
				if c.err == nil {
					c.err = newError(CodeInvalidArgument, fmt.Sprintf("WithFilters: unknown filter %v (use FilterNoPut or FilterNoDelete)", f), nil)
				}
				continue
			}
			c.watch.filters = append(c.watch.filters, enginev1.WatchFilter(f))
		}
	})
}

// WithResumeTimeout bounds how long a broken watch keeps trying to re-create
// itself (leader kill, node restart, network failure) before it ends with
// the last error. The default, 0, retries until the caller cancels its
// context or closes the Client ("retry until cancelled"). Must be >= 0.
func WithResumeTimeout(d time.Duration) WatchOption {
	return opOptionFunc(func(c *opConfig) {
		c.use(optResumeTimeout)
		if d < 0 && c.err == nil {
			c.err = newError(CodeInvalidArgument, fmt.Sprintf("WithResumeTimeout: duration must be >= 0, got %v", d), nil)
		}
		c.watch.resumeTimeout = d
	})
}
