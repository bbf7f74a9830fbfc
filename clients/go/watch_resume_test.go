package dengine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

func canceledWith(code enginev1.ErrorCode, reason string, resume, compact uint64) *enginev1.WatchResponse {
	return &enginev1.WatchResponse{Canceled: true, CancelCode: code, CancelReason: reason, ResumeRevision: resume, CompactRevision: compact}
}

// drain reads a watch channel to its end.
func drain(t *testing.T, ch <-chan WatchEvent) []WatchEvent {
	t.Helper()
	var got []WatchEvent
	for {
		ev, ok := recvEvent(t, ch)
		if !ok {
			return got
		}
		got = append(got, ev)
	}
}

// A SHUTTING_DOWN cancel (graceful stop) is resumed from the server's
// resume_revision; the COMPACTED cancel that follows ends the watch with
// ErrCompacted carrying the compact and resume revisions — decided from
// cancel_code although the reason text says something else.
func TestWatchResumesOnShutdownCancelAndEndsCompacted(t *testing.T) {
	var streams atomic.Int32
	starts := make(chan uint64, 4)
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			starts <- r.GetStartRevision()
			if streams.Add(1) == 1 {
				_ = s.Send(created(10))
				_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 11)}})
				// Events 12..14 were filtered on the server: it says resume at 15.
				return s.Send(canceledWith(enginev1.ErrorCode_SHUTTING_DOWN, "bye", 15, 0))
			}
			_ = s.Send(created(20))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 16)}})
			return s.Send(canceledWith(enginev1.ErrorCode_COMPACTED, "SHUTTING_DOWN: misleading text", 17, 30))
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, ch)
	if len(got) != 3 || got[0].Revision() != 11 || got[1].Revision() != 16 {
		t.Fatalf("got %+v, want events 11, 16 and a final error", got)
	}
	var e *Error
	if !errors.Is(got[2].Err, ErrCompacted) || !errors.As(got[2].Err, &e) {
		t.Fatalf("final value %v, want ErrCompacted", got[2].Err)
	}
	if e.CompactRevision != 30 || e.ResumeRevision != 17 {
		t.Fatalf("compact %d resume %d, want 30 and 17", e.CompactRevision, e.ResumeRevision)
	}
	if s1, s2 := <-starts, <-starts; s1 != 0 || s2 != 15 {
		t.Fatalf("start revisions %d, %d; want 0, 15", s1, s2)
	}
}

// A slow-consumer cancel (OVERLOADED) ends the watch with ErrOverloaded and
// is not resumed; the error says where to resume.
func TestWatchOverloadedCancelEnds(t *testing.T) {
	var streams atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(_ *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			streams.Add(1)
			_ = s.Send(created(1))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 2)}})
			return s.Send(canceledWith(enginev1.ErrorCode_OVERLOADED, "watcher too slow", 0, 0))
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, ch)
	var e *Error
	if len(got) != 2 || !errors.Is(got[1].Err, ErrOverloaded) || !errors.As(got[1].Err, &e) || e.ResumeRevision != 3 {
		t.Fatalf("got %+v, want event 2 then ErrOverloaded resuming at 3", got)
	}
	if n := streams.Load(); n != 1 {
		t.Fatalf("%d streams, want 1 (no resume after OVERLOADED)", n)
	}
}

// A server without cancel_code: the code name at the start of the reason
// decides (SHUTTING_DOWN resumes, PERMISSION_DENIED ends).
func TestWatchCancelWithoutCodeReadsReasonName(t *testing.T) {
	var streams atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(_ *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			_ = s.Send(created(5))
			if streams.Add(1) == 1 {
				return s.Send(&enginev1.WatchResponse{Canceled: true, CancelReason: "SHUTTING_DOWN: the server is shutting down"})
			}
			return s.Send(&enginev1.WatchResponse{Canceled: true, CancelReason: "PERMISSION_DENIED: role lost"})
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, ch)
	if len(got) != 1 || !errors.Is(got[0].Err, ErrPermissionDenied) || streams.Load() != 2 {
		t.Fatalf("got %+v after %d streams, want ErrPermissionDenied after 2", got, streams.Load())
	}
}

// Options travel on the wire; PrevKV and progress notifications reach the
// caller; several events of one revision (a txn) are all delivered.
func TestWatchOptionsOnTheWire(t *testing.T) {
	reqs := make(chan *enginev1.WatchRequest, 2)
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			reqs <- r
			_ = s.Send(created(7))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{
				{Type: enginev1.EventType_PUT, Kv: &enginev1.KeyValue{Key: []byte("a/1"), Value: []byte("new"), ModRevision: 8},
					PrevKv: &enginev1.KeyValue{Key: []byte("a/1"), Value: []byte("old"), ModRevision: 3}},
				putEvent("a/2", 8),
			}})
			_ = s.Send(&enginev1.WatchResponse{Progress: true, Header: &enginev1.ResponseHeader{Revision: 12}})
			<-s.Context().Done()
			return nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("a/"), WithRangeEnd([]byte("b")), WithPrevKV(), WithProgressNotify(),
		WithFilters(FilterNoDelete), WithStartRevision(4))
	if err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	if string(r.GetKey()) != "a/" || string(r.GetRangeEnd()) != "b" || r.GetPrefix() || !r.GetPrevKv() || !r.GetProgressNotify() ||
		len(r.GetFilters()) != 1 || r.GetFilters()[0] != enginev1.WatchFilter_NO_DELETE || r.GetStartRevision() != 4 {
		t.Fatalf("request %+v", r)
	}
	e1, _ := recvEvent(t, ch)
	e2, _ := recvEvent(t, ch)
	p, _ := recvEvent(t, ch)
	if e1.PrevKV == nil || string(e1.PrevKV.Value) != "old" || e1.IsProgress() {
		t.Fatalf("first event %+v, want PrevKV old", e1)
	}
	if string(e2.KV.Key) != "a/2" || e2.Revision() != 8 || e2.PrevKV != nil {
		t.Fatalf("second event of the same revision %+v", e2)
	}
	if !p.IsProgress() || p.Revision() != 12 || p.Err != nil {
		t.Fatalf("progress value %+v", p)
	}

	if _, err := c.Watch(testCtx(t), []byte("k"), WithLimit(3)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WithLimit on Watch: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.Put(testCtx(t), []byte("k"), []byte("v"), WithStartRevision(3)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WithStartRevision on Put: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.Watch(testCtx(t), nil, WithFromKey()); err == nil {
		// accepted: every key
	} else {
		t.Fatalf("WithFromKey with an empty key: %v", err)
	}
	if _, err := c.Watch(testCtx(t), []byte("k"), WithFilters(WatchFilter(9))); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown filter: %v", err)
	}
}

// Retry until cancelled: the node refuses the re-open for longer than the
// retry policy's attempts; the watch keeps trying and resumes when it comes
// back, with no gap.
func TestWatchRetriesUntilCancelled(t *testing.T) {
	var opens atomic.Int32
	starts := make(chan uint64, 64)
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			k := opens.Add(1)
			starts <- r.GetStartRevision()
			switch {
			case k == 1:
				_ = s.Send(created(1))
				_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 2)}})
				return status.Error(codes.Unavailable, "node killed")
			case k < 20: // > 6 attempts of fastRetry, several times over
				return status.Error(codes.Unavailable, "connection refused")
			}
			_ = s.Send(created(9))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 3)}})
			<-s.Context().Done()
			return nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{2, 3} {
		if ev, ok := recvEvent(t, ch); !ok || ev.Err != nil || ev.Revision() != want {
			t.Fatalf("got %+v ok=%v, want revision %d", ev, ok, want)
		}
	}
	<-starts
	for i := 1; i < 20; i++ {
		if s := <-starts; s != 3 {
			t.Fatalf("re-open %d started at %d, want 3", i, s)
		}
	}

	// WithResumeTimeout: gives up with the last error and where to resume.
	opens.Store(0)
	ch, err = c.Watch(testCtx(t), []byte("k"), WithResumeTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, ch)
	var e *Error
	if len(got) != 2 || !errors.Is(got[1].Err, ErrUnavailable) || !errors.As(got[1].Err, &e) || e.ResumeRevision != 3 {
		t.Fatalf("got %+v, want event 2 then ErrUnavailable resuming at 3", got)
	}
}

// invoke retries a CANCELLED status the caller did not ask for (tonic's
// server-side "Timeout expired") like a timeout, with the same WriteId.
func TestInvokeRetriesUnaskedCancel(t *testing.T) {
	var calls atomic.Int32
	ids := make(chan *enginev1.WriteId, 4)
	node := startFake(t, func(n *fakeNode) {
		n.put = func(_ context.Context, r *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			ids <- r.GetWriteId()
			if calls.Add(1) == 1 {
				return nil, status.Error(codes.Canceled, "Timeout expired")
			}
			return &enginev1.PutResponse{Revision: 5}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	rev, err := c.Put(testCtx(t), []byte("k"), []byte("v"))
	if err != nil || rev != 5 {
		t.Fatalf("Put = %d, %v; want 5 after one retry", rev, err)
	}
	a, b := <-ids, <-ids
	if a.GetClientId() != b.GetClientId() || a.GetSeq() != b.GetSeq() {
		t.Fatalf("retry used write id %v, first %v", b, a)
	}

	// The caller's own cancellation is not retried.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Put(ctx, []byte("k"), []byte("v")); !errors.Is(err, ErrCanceled) {
		t.Fatalf("cancelled ctx: %v, want ErrCanceled", err)
	}
}

// The server cancels in the middle of a revision (a txn's events split over
// two messages): resume_revision is that revision; the client re-creates the
// watch there and drops the events of it it already delivered.
func TestWatchResumesInsideACutRevision(t *testing.T) {
	var streams atomic.Int32
	starts := make(chan uint64, 4)
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			starts <- r.GetStartRevision()
			if streams.Add(1) == 1 {
				_ = s.Send(created(4))
				_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("a", 5), putEvent("t1", 6)}})
				return s.Send(canceledWith(enginev1.ErrorCode_SHUTTING_DOWN, "bye", 6, 0))
			}
			_ = s.Send(created(9))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("t1", 6), putEvent("t2", 6), putEvent("b", 7)}})
			<-s.Context().Done()
			return nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), nil, WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		ev, ok := recvEvent(t, ch)
		if !ok || ev.Err != nil {
			t.Fatalf("watch ended: %+v", ev)
		}
		got = append(got, fmt.Sprintf("%s@%d", ev.KV.Key, ev.Revision()))
	}
	if want := "a@5 t1@6 t2@6 b@7"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if s1, s2 := <-starts, <-starts; s1 != 0 || s2 != 6 {
		t.Fatalf("start revisions %d, %d; want 0, 6", s1, s2)
	}
}
