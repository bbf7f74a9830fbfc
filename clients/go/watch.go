package dengine

import (
	"context"
	"errors"
	"io"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

const defaultWatchBuffer = 64

// Watch streams the changes of one key. It returns once the server has
// created the watch, so every change committed after Watch returns is
// delivered (and, WithStartRevision, earlier ones still in the history).
//
// Events arrive in revision order, one WatchEvent per change. The channel is
// closed when the watch ends:
//   - the caller cancels ctx: the channel is closed without an error value;
//   - anything else (the server cancels the watch, the start revision was
//     compacted, the cluster stays unreachable past the retry policy, the
//     Client is closed): the last value has Err set, then the channel closes.
//
// If the connection breaks, the client re-creates the watch (on the leader,
// or another endpoint) from the revision after the last delivered event, so
// no change is lost or delivered twice; if that history was compacted the
// watch ends with ErrCompacted.
//
// Read the channel promptly: a full channel (WithWatchBuffer, default 64)
// stops reading from the server, and the server may then cancel the watch.
func (c *Client) Watch(ctx context.Context, key []byte, opts ...WatchOption) (<-chan WatchEvent, error) {
	if err := checkKey("key", key); err != nil {
		return nil, err
	}
	return c.watch(ctx, key, false, opts)
}

// WatchPrefix is Watch for every key starting with prefix (all keys if the
// prefix is empty).
func (c *Client) WatchPrefix(ctx context.Context, prefix []byte, opts ...WatchOption) (<-chan WatchEvent, error) {
	return c.watch(ctx, prefix, true, opts)
}

type watcher struct {
	c      *Client
	ctx    context.Context
	key    []byte
	prefix bool
	out    chan WatchEvent

	// next is the start revision for (re-)creating the stream: the user's
	// start revision, then the revision after the watch's creation point,
	// then the revision after the last delivered event.
	next uint64
	// delivered is the revision of the last delivered event (0: none); events
	// at or below it are duplicates from a resumed stream and are dropped.
	delivered uint64
}

// openedStream is an established watch stream.
type openedStream struct {
	stream enginev1.Kv_WatchClient
	cancel context.CancelFunc
	// first holds events that arrived with the created message.
	first *enginev1.WatchResponse
}

func (c *Client) watch(ctx context.Context, key []byte, prefix bool, opts []WatchOption) (<-chan WatchEvent, error) {
	wc := watchConfig{bufferSize: defaultWatchBuffer}
	for _, o := range opts {
		o(&wc)
	}
	w := &watcher{c: c, ctx: ctx, key: key, prefix: prefix, next: wc.startRevision}
	st, err := w.open()
	if err != nil {
		return nil, err
	}
	w.out = make(chan WatchEvent, wc.bufferSize)
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
		stream, err := cn.kv.Watch(sctx, &enginev1.WatchRequest{Key: w.key, Prefix: w.prefix, StartRevision: w.next})
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
			return watchCanceled(first, cn.addr)
		}
		if rev := first.GetHeader().GetRevision(); w.next == 0 && rev != 0 {
			// Resume point if the stream breaks before any event: the first
			// revision after the one the watch was created at.
			w.next = rev + 1
		}
		res = &openedStream{stream: stream, cancel: scancel, first: first}
		return nil
	})
	return res, err
}

func watchCanceled(resp *enginev1.WatchResponse, addr string) *Error {
	reason := resp.GetCancelReason()
	if reason == "" {
		reason = "the server ended the watch"
	}
	return &Error{Code: CodeWatchCanceled, Message: reason, Endpoint: addr}
}

// run forwards events until the watch ends, re-creating the stream after
// retryable failures.
func (w *watcher) run(st *openedStream) {
	defer close(w.out)
	for {
		err := w.pump(st)
		st.cancel()
		if w.ctx.Err() != nil {
			return // the caller cancelled: close without an error value
		}
		if isClosed(w.c) {
			w.final(newError(CodeClosed, "client closed", nil))
			return
		}
		e := FromStatus(err)
		if !e.Code.retryable() {
			w.final(e)
			return
		}
		st, err = w.open()
		if err != nil {
			if w.ctx.Err() == nil {
				w.final(err)
			}
			return
		}
	}
}

// pump delivers the events of one stream; it returns why the stream ended.
func (w *watcher) pump(st *openedStream) error {
	resp := st.first
	for {
		if resp != nil {
			if resp.GetCanceled() {
				return watchCanceled(resp, "")
			}
			for _, ev := range resp.GetEvents() {
				kv := kvFromProto(ev.GetKv())
				if kv == nil {
					continue
				}
				if kv.ModRevision <= w.delivered {
					continue // already delivered before a resume
				}
				t := EventPut
				if ev.GetType() == enginev1.EventType_DELETE {
					t = EventDelete
				}
				select {
				case w.out <- WatchEvent{Type: t, KV: *kv}:
				case <-w.ctx.Done():
					return w.ctx.Err()
				case <-w.c.done:
					return newError(CodeClosed, "client closed", nil)
				}
				w.delivered = kv.ModRevision
				w.next = kv.ModRevision + 1
			}
		}
		var err error
		resp, err = st.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return newError(CodeUnavailable, "watch stream closed by the server", err)
			}
			return err
		}
	}
}

// final sends the terminal error value unless the caller has gone away.
func (w *watcher) final(err error) {
	select {
	case w.out <- WatchEvent{Err: err}:
	case <-w.ctx.Done():
	}
}
