package dengine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

func putEvent(key string, rev uint64) *enginev1.WatchEvent {
	return &enginev1.WatchEvent{Type: enginev1.EventType_PUT, Kv: &enginev1.KeyValue{Key: []byte(key), Value: []byte("v"), ModRevision: rev}}
}

func created(rev uint64) *enginev1.WatchResponse {
	return &enginev1.WatchResponse{Created: true, Header: &enginev1.ResponseHeader{Revision: rev}}
}

func recvEvent(t *testing.T, ch <-chan WatchEvent) (WatchEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
		return WatchEvent{}, false
	}
}

// The stream breaks after two events; the client re-creates it from the next
// revision, drops a replayed duplicate, and ends with the server's cancel.
func TestWatchResumesAndEndsWithError(t *testing.T) {
	var streams atomic.Int32
	starts := make(chan uint64, 4)
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			starts <- r.GetStartRevision()
			switch streams.Add(1) {
			case 1:
				if !r.GetPrefix() || string(r.GetKey()) != "app/" {
					return status.Error(codes.InvalidArgument, "want prefix watch on app/")
				}
				_ = s.Send(created(10))
				_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("app/a", 11), putEvent("app/b", 12)}})
				return status.Error(codes.Unavailable, "node going away")
			default:
				_ = s.Send(created(12))
				_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("app/b", 12), {
					Type: enginev1.EventType_DELETE, Kv: &enginev1.KeyValue{Key: []byte("app/a"), ModRevision: 13},
				}}})
				return s.Send(&enginev1.WatchResponse{Canceled: true, CancelReason: "watcher too slow"})
			}
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.WatchPrefix(testCtx(t), []byte("app/"))
	if err != nil {
		t.Fatal(err)
	}
	var got []WatchEvent
	for {
		ev, ok := recvEvent(t, ch)
		if !ok {
			break
		}
		got = append(got, ev)
	}
	if len(got) != 4 {
		t.Fatalf("got %d values, want 3 events + final error: %+v", len(got), got)
	}
	for i, want := range []uint64{11, 12, 13} {
		if got[i].Err != nil || got[i].Revision() != want {
			t.Fatalf("event %d = %+v, want revision %d", i, got[i], want)
		}
	}
	if got[2].Type != EventDelete || string(got[2].KV.Key) != "app/a" {
		t.Fatalf("delete event = %+v", got[2])
	}
	last := got[3].Err
	var e *Error
	if !errors.Is(last, ErrWatchCanceled) || !errors.As(last, &e) || e.Message != "watcher too slow" {
		t.Fatalf("final value: %v", last)
	}
	if s1, s2 := <-starts, <-starts; s1 != 0 || s2 != 13 {
		t.Fatalf("start revisions %d then %d, want 0 then 13", s1, s2)
	}
}

// A watch that breaks before any event resumes after the creation revision;
// WithStartRevision is sent as given.
func TestWatchStartRevision(t *testing.T) {
	starts := make(chan uint64, 4)
	var streams atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			starts <- r.GetStartRevision()
			if streams.Add(1) == 1 {
				_ = s.Send(created(40))
				return status.Error(codes.Unavailable, "bye")
			}
			return dengineErr(codes.OutOfRange, "COMPACTED", "revision 41 compacted", nil)
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := recvEvent(t, ch)
	if !ok || !errors.Is(ev.Err, ErrCompacted) {
		t.Fatalf("want final ErrCompacted, got %+v ok=%v", ev, ok)
	}
	if _, ok := recvEvent(t, ch); ok {
		t.Fatal("channel not closed after the final error")
	}
	if s1, s2 := <-starts, <-starts; s1 != 0 || s2 != 41 {
		t.Fatalf("start revisions %d, %d; want 0, 41", s1, s2)
	}

	ch, err = c.Watch(testCtx(t), []byte("k"), WithStartRevision(5))
	if err == nil {
		t.Fatalf("third stream is scripted to fail with COMPACTED, got a channel %v", ch)
	}
	if !errors.Is(err, ErrCompacted) {
		t.Fatalf("setup error: %v", err)
	}
	if s := <-starts; s != 5 {
		t.Fatalf("start revision %d, want 5", s)
	}
}

// Cancelling the caller's context closes the channel without an error value.
func TestWatchCancelClosesQuietly(t *testing.T) {
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(_ *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			_ = s.Send(created(1))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 2)}})
			<-s.Context().Done()
			return nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := c.Watch(ctx, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := recvEvent(t, ch); ev.Err != nil || ev.Revision() != 2 {
		t.Fatalf("first event %+v", ev)
	}
	cancel()
	if ev, ok := recvEvent(t, ch); ok {
		t.Fatalf("after cancel got %+v, want closed channel", ev)
	}
}

// Closing the client ends its watches with ErrClosed.
func TestWatchEndsOnClose(t *testing.T) {
	node := startFake(t, func(n *fakeNode) {
		n.watch = func(_ *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			_ = s.Send(created(1))
			<-s.Context().Done()
			return nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	ev, ok := recvEvent(t, ch)
	if !ok || !errors.Is(ev.Err, ErrClosed) {
		t.Fatalf("want final ErrClosed, got %+v ok=%v", ev, ok)
	}
}

// A watch request to a follower follows the NOT_LEADER hint.
func TestWatchFollowsRedirect(t *testing.T) {
	leader := startFake(t, func(n *fakeNode) {
		n.watch = func(_ *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
			_ = s.Send(created(1))
			_ = s.Send(&enginev1.WatchResponse{Events: []*enginev1.WatchEvent{putEvent("k", 2)}})
			<-s.Context().Done()
			return nil
		}
	})
	follower := startFake(t, func(n *fakeNode) {
		n.watch = func(*enginev1.WatchRequest, enginev1.Kv_WatchServer) error { return notLeader("1", leader.addr) }
	})
	c := newTestClient(t, []string{follower.addr})
	ch, err := c.Watch(testCtx(t), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := recvEvent(t, ch); ev.Err != nil || ev.Revision() != 2 {
		t.Fatalf("event %+v", ev)
	}
}
