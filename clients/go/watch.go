package dengine

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

const defaultWatchBuffer = 64

// Watch streams the changes of one key, or of a range of keys with
// WithPrefix, WithRangeEnd or WithFromKey (then key may be empty). It
// returns once the server has created the watch, so every change committed
// after Watch returns is delivered (and, WithStartRevision, earlier ones
// still in the history). Options: WithStartRevision, WithPrevKV (events
// carry PrevKV), WithProgressNotify (progress notifications arrive as
// values with IsProgress()), WithFilters, WithWatchBuffer,
// WithResumeTimeout; any other option is refused with ErrInvalidArgument.
//
// Events arrive in revision order, each at most once. The channel is
// closed when the watch ends:
//   - the caller cancels ctx: the channel is closed without an error value;
//   - otherwise the last value has Err set (an *Error whose ResumeRevision
//     says where to watch from again), then the channel closes.
//
// Resume rule: when the stream breaks (node killed, connection lost,
// timeout) or the server cancels the watch with SHUTTING_DOWN, NOT_LEADER,
// NO_LEADER, CHANGE_IN_PROGRESS or TIMEOUT (a graceful restart, a leader
// change), the client re-creates the watch on the leader from the revision
// after the last delivered event (or the server's resume_revision if that
// is later; or inside the last revision, skipping the events of it already
// delivered, when the server says it cut that revision), so no change is
// lost or delivered twice. It keeps trying until
// ctx is cancelled or the Client is closed (bound it with
// WithResumeTimeout). The watch ends with a typed error, decided from the
// server's cancel_code, only when resuming cannot help: ErrCompacted (the
// history to resume from is gone; Error.CompactRevision is the oldest
// revision left), ErrOverloaded (this watcher read too slowly and the server
// dropped it), ErrUnauthenticated / ErrPermissionDenied, ErrInvalidArgument,
// ErrClosed, or ErrWatchCanceled for a cancel without a known code.
//
// Read the channel promptly: a full channel (WithWatchBuffer, default 64)
// stops reading from the server, and the server may then cancel the watch
// with ErrOverloaded.
func (c *Client) Watch(ctx context.Context, key []byte, opts ...WatchOption) (<-chan WatchEvent, error) {
	return c.watch(ctx, "Watch", key, opts)
}

// WatchPrefix is Watch for every key starting with prefix (all keys if the
// prefix is empty): Watch with WithPrefix.
func (c *Client) WatchPrefix(ctx context.Context, prefix []byte, opts ...WatchOption) (<-chan WatchEvent, error) {
	return c.watch(ctx, "WatchPrefix", prefix, append([]WatchOption{WithPrefix()}, opts...))
}

type watcher struct {
	c   *Client
	ctx context.Context
	// req is the watch as created; StartRevision is set per (re-)open.
	req           *enginev1.WatchRequest
	resumeTimeout time.Duration
	out           chan WatchEvent

	// next is the start revision for (re-)creating the stream: the user's
	// start revision, then the revision after the watch's creation point,
	// then the revision after the last delivered event (or progress
	// notification, or the server's resume_revision).
	next uint64
	// floor is the start revision of the current stream: events below it
	// are duplicates of events delivered before a resume and are dropped.
	floor uint64
	// lastRev is the revision of the last delivered event and atLast how
	// many events of that revision were delivered. When the server cancels
	// in the middle of a revision (its resume_revision = lastRev), the
	// stream is re-created from lastRev and the first skip events of
	// skipRev are dropped as already delivered.
	lastRev, skipRev uint64
	atLast, skip     int
}

// openedStream is an established watch stream.
type openedStream struct {
	stream enginev1.Kv_WatchClient
	cancel context.CancelFunc
	addr   string
	// first holds events that arrived with the created message.
	first *enginev1.WatchResponse
}

func (c *Client) watch(ctx context.Context, call string, key []byte, opts []WatchOption) (<-chan WatchEvent, error) {
	cfg, err := buildOp(call, opts, allowWatch)
	if err != nil {
		return nil, err
	}
	req := &enginev1.WatchRequest{
		PrevKv:         cfg.prevKV,
		ProgressNotify: cfg.watch.progressNotify,
		Filters:        cfg.watch.filters,
	}
	if cfg.mode == rangePrefix {
		// The prefix flag (not a computed range end) keeps prefix watches
		// working on servers that predate range_end.
		if key == nil {
			key = []byte{}
		}
		req.Key, req.Prefix = key, true
	} else {
		if req.Key, req.RangeEnd, err = cfg.bounds(key); err != nil {
			return nil, err
		}
	}
	buffer := defaultWatchBuffer
	if cfg.has(optWatchBuffer) {
		buffer = cfg.watch.bufferSize
	}
	w := &watcher{c: c, ctx: ctx, req: req, resumeTimeout: cfg.watch.resumeTimeout, next: cfg.watch.startRevision}
	st, err := w.open()
	if err != nil {
		return nil, err
	}
	w.out = make(chan WatchEvent, buffer)
	go w.run(st)
	return w.out, nil
}

// open creates the watch from w.next, with the client's retries. The
// stream's context is derived from the caller's ctx (not from the attempt's
// timeout, which bounds only the wait for the "created" message).
func (w *watcher) open() (*openedStream, error) {
	var res *openedStream
	err := w.c.invoke(w.ctx, routeLeader, func(actx context.Context, cn *conn) error {
		sctx, scancel := context.WithCancel(w.ctx)
		stop := context.AfterFunc(actx, scancel)
		t := w.req
		req := &enginev1.WatchRequest{Key: t.Key, Prefix: t.Prefix, RangeEnd: t.RangeEnd, PrevKv: t.PrevKv,
			ProgressNotify: t.ProgressNotify, Filters: t.Filters, StartRevision: w.next}
		stream, err := cn.kv.Watch(sctx, req)
		var first *enginev1.WatchResponse
		if err == nil {
			first, err = stream.Recv()
		}
		if !stop() {
			// The attempt timed out (or ctx ended) before the watch was created.
			scancel()
			if err == nil {
				err = actx.Err()
			}
			return err
		}
		if err != nil {
			scancel()
			if errors.Is(err, io.EOF) {
				return newError(CodeUnavailable, "watch stream closed before it was created", err)
			}
			return err
		}
		if first.GetCanceled() {
			scancel()
			return watchCancel(first, cn.addr)
		}
		if rev := first.GetHeader().GetRevision(); w.next == 0 && rev != 0 {
			// Resume point if the stream breaks before any event: the first
			// revision after the one the watch was created at.
			w.next = rev + 1
		}
		w.floor = w.next
		w.skipRev, w.skip = 0, 0
		if w.lastRev != 0 && w.next == w.lastRev {
			w.skipRev, w.skip = w.lastRev, w.atLast
		}
		res = &openedStream{stream: stream, cancel: scancel, addr: cn.addr, first: first}
		return nil
	})
	return res, err
}

// watchCancel turns a canceled WatchResponse into an *Error. The class comes
// from cancel_code; only a server that sends no cancel_code (older than the
// field) has it read from the reason, whose text then starts with an
// ErrorCode name ("SHUTTING_DOWN: ..."). A cancel with neither is
// CodeWatchCanceled.
func watchCancel(resp *enginev1.WatchResponse, addr string) *Error {
	reason := resp.GetCancelReason()
	if reason == "" {
		reason = "the server ended the watch"
	}
	code, known := CodeWatchCanceled, false
	if cc := resp.GetCancelCode(); cc != enginev1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		code, known = codeFromReason(cc.String())
		if !known {
			code = CodeWatchCanceled
		}
	} else if name, _, ok := strings.Cut(reason, ":"); ok {
		if c, k := codeFromReason(strings.TrimSpace(name)); k {
			code = c
		}
	}
	return &Error{
		Code:            code,
		Message:         reason,
		Endpoint:        addr,
		CompactRevision: resp.GetCompactRevision(),
		ResumeRevision:  resp.GetResumeRevision(),
		fromServer:      true,
	}
}

// cancelResumable: server cancels after which re-creating the watch
// elsewhere (or later) continues it without a gap.
func cancelResumable(c Code) bool {
	switch c {
	case CodeShuttingDown, CodeNotLeader, CodeNoLeader, CodeChangeInProgress, CodeTimeout, CodeUnavailable:
		return true
	}
	return false
}

// breakResumable: stream failures (not server cancels) after which the
// watch is re-created. Re-creating a watch has no side effects, so every
// transport failure qualifies: retryable codes, a CANCELLED the caller did
// not ask for, and an INTERNAL/UNKNOWN status without d-engine details (an
// HTTP/2 reset or a closed socket). OVERLOADED ends the watch (the server
// dropped a slow watcher: resuming would repeat it).
func breakResumable(e *Error) bool {
	switch {
	case e.Code == CodeOverloaded:
		return false
	case e.Code.retryable():
		return true
	case e.fromServer:
		return false
	case e.Code == CodeCanceled:
		return e.GRPCCode == codes.Canceled
	case e.Code == CodeInternal:
		return e.GRPCCode == codes.Internal || e.GRPCCode == codes.Unknown
	}
	return false
}

// streamEnd is why one stream ended: a server cancel or a stream error.
type streamEnd struct {
	err      *Error
	canceled bool // a WatchResponse with canceled set
}

// run forwards events until the watch ends, re-creating the stream after
// resumable failures.
func (w *watcher) run(st *openedStream) {
	defer close(w.out)
	for {
		end := w.pump(st)
		st.cancel()
		if w.ctx.Err() != nil {
			return // the caller cancelled: close without an error value
		}
		if isClosed(w.c) {
			w.final(newError(CodeClosed, "client closed", nil))
			return
		}
		if end.canceled {
			switch r := end.err.ResumeRevision; {
			case r != 0 && r == w.lastRev && w.next == r+1:
				w.next = r // the server cut revision r in the middle: resume inside it
			case r > w.next:
				w.next = r // events up to r were filtered on the server
			}
			if !cancelResumable(end.err.Code) {
				w.final(end.err)
				return
			}
		} else if !breakResumable(end.err) {
			w.final(end.err)
			return
		}
		var err error
		st, err = w.reopen()
		if err != nil {
			w.final(err)
			return
		}
		if st == nil {
			return // ctx cancelled while re-opening
		}
	}
}

// reopen re-creates the watch from w.next until it succeeds, fails with an
// error resuming cannot fix, the resume timeout passes, or the caller goes
// away (nil, nil).
func (w *watcher) reopen() (*openedStream, error) {
	began := time.Now()
	pol := w.c.cfg.retry
	for n := 0; ; n++ {
		st, err := w.open()
		if err == nil {
			return st, nil
		}
		if w.ctx.Err() != nil {
			return nil, nil
		}
		e := FromStatus(err)
		if e.Code == CodeClosed || isClosed(w.c) {
			return nil, newError(CodeClosed, "client closed", nil)
		}
		var resumable bool
		if e.fromServer && e.Code == CodeOverloaded {
			resumable = true // refused at creation: the leader is busy, try again
		} else if e.fromServer {
			resumable = cancelResumable(e.Code)
		} else {
			resumable = breakResumable(e)
		}
		if !resumable {
			return nil, e
		}
		if w.resumeTimeout > 0 && time.Since(began) >= w.resumeTimeout {
			out := *e
			out.Message = "watch not resumed within " + w.resumeTimeout.String() + ": " + e.Message
			return nil, &out
		}
		t := time.NewTimer(backoffDelay(pol, n))
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
			return nil, nil
		case <-w.c.done:
			t.Stop()
			return nil, newError(CodeClosed, "client closed", nil)
		}
	}
}

// pump delivers the events of one stream; it returns why the stream ended.
func (w *watcher) pump(st *openedStream) streamEnd {
	resp := st.first
	for {
		if resp != nil {
			if resp.GetCanceled() {
				return streamEnd{err: watchCancel(resp, st.addr), canceled: true}
			}
			if resp.GetProgress() && len(resp.GetEvents()) == 0 {
				if rev := resp.GetHeader().GetRevision(); rev != 0 {
					if rev+1 > w.next {
						w.next = rev + 1
					}
					if err := w.send(WatchEvent{ProgressRevision: rev}); err != nil {
						return streamEnd{err: err}
					}
				}
			}
			for _, ev := range resp.GetEvents() {
				kv := kvFromProto(ev.GetKv())
				if kv == nil {
					continue
				}
				if kv.ModRevision < w.floor {
					continue // delivered before a resume
				}
				if w.skip > 0 && kv.ModRevision == w.skipRev {
					w.skip-- // delivered before the server cut this revision
					continue
				}
				t := EventPut
				if ev.GetType() == enginev1.EventType_DELETE {
					t = EventDelete
				}
				if err := w.send(WatchEvent{Type: t, KV: *kv, PrevKV: kvFromProto(ev.GetPrevKv())}); err != nil {
					return streamEnd{err: err}
				}
				if kv.ModRevision == w.lastRev {
					w.atLast++
				} else {
					w.lastRev, w.atLast = kv.ModRevision, 1
				}
				if kv.ModRevision+1 > w.next {
					w.next = kv.ModRevision + 1
				}
			}
		}
		var err error
		resp, err = st.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return streamEnd{err: newError(CodeUnavailable, "watch stream closed by the server without a cancel", err)}
			}
			e := FromStatus(err)
			if e.Endpoint == "" {
				e.Endpoint = st.addr
			}
			return streamEnd{err: e}
		}
	}
}

// send delivers one value unless the caller or the client goes away.
func (w *watcher) send(ev WatchEvent) *Error {
	select {
	case w.out <- ev:
		return nil
	case <-w.ctx.Done():
		return FromStatus(w.ctx.Err())
	case <-w.c.done:
		return newError(CodeClosed, "client closed", nil)
	}
}

// final sends the terminal error value (stamped with the revision to resume
// from) unless the caller has gone away.
func (w *watcher) final(err error) {
	if e, ok := err.(*Error); ok && e.ResumeRevision < w.next {
		stamped := *e
		stamped.ResumeRevision = w.next
		err = &stamped
	}
	select {
	case w.out <- WatchEvent{Err: err}:
	case <-w.ctx.Done():
	}
}
