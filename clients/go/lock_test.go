package dengine

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// fakeCoord is an in-process gRPC server implementing the Lock and Election
// services with scripted behaviour; nil handlers answer UNIMPLEMENTED.
type fakeCoord struct {
	enginev1.UnimplementedLockServer
	enginev1.UnimplementedElectionServer

	addr string

	mu      sync.Mutex
	locks   []*enginev1.LockRequest
	unlocks []*enginev1.UnlockRequest

	lock     func(context.Context, *enginev1.LockRequest) (*enginev1.LockResponse, error)
	unlock   func(context.Context, *enginev1.UnlockRequest) (*enginev1.UnlockResponse, error)
	proclaim func(context.Context, *enginev1.ProclaimRequest) (*enginev1.ProclaimResponse, error)
	resign   func(context.Context, *enginev1.ResignRequest) (*enginev1.ResignResponse, error)
	observe  func(int, *enginev1.ElectionLeaderRequest, enginev1.Election_ObserveServer) error
	observes int
}

func startFakeCoord(t *testing.T, configure func(f *fakeCoord)) *fakeCoord {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCoord{addr: lis.Addr().String()}
	configure(f)
	srv := grpc.NewServer()
	enginev1.RegisterLockServer(srv, f)
	enginev1.RegisterElectionServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeCoord) Lock(ctx context.Context, r *enginev1.LockRequest) (*enginev1.LockResponse, error) {
	f.mu.Lock()
	f.locks = append(f.locks, r)
	f.mu.Unlock()
	if f.lock == nil {
		return nil, unimpl()
	}
	return f.lock(ctx, r)
}

func (f *fakeCoord) Unlock(ctx context.Context, r *enginev1.UnlockRequest) (*enginev1.UnlockResponse, error) {
	f.mu.Lock()
	f.unlocks = append(f.unlocks, r)
	f.mu.Unlock()
	if f.unlock == nil {
		return &enginev1.UnlockResponse{}, nil
	}
	return f.unlock(ctx, r)
}

func (f *fakeCoord) Proclaim(ctx context.Context, r *enginev1.ProclaimRequest) (*enginev1.ProclaimResponse, error) {
	if f.proclaim == nil {
		return nil, unimpl()
	}
	return f.proclaim(ctx, r)
}

func (f *fakeCoord) Resign(ctx context.Context, r *enginev1.ResignRequest) (*enginev1.ResignResponse, error) {
	if f.resign == nil {
		return nil, unimpl()
	}
	return f.resign(ctx, r)
}

func (f *fakeCoord) Observe(r *enginev1.ElectionLeaderRequest, s enginev1.Election_ObserveServer) error {
	f.mu.Lock()
	f.observes++
	n := f.observes
	f.mu.Unlock()
	if f.observe == nil {
		return unimpl()
	}
	return f.observe(n, r, s)
}

func (f *fakeCoord) lockRequests() []*enginev1.LockRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*enginev1.LockRequest(nil), f.locks...)
}

func (f *fakeCoord) unlockRequests() []*enginev1.UnlockRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*enginev1.UnlockRequest(nil), f.unlocks...)
}

// Lock follows NOT_LEADER to the leader and retries UNAVAILABLE and an
// attempt ended by the server's timeout, always with the same lease (which keeps the place in the server's queue).
func TestLockRetriesWithSameLease(t *testing.T) {
	leader := startFakeCoord(t, func(f *fakeCoord) {
		calls := 0
		f.lock = func(ctx context.Context, r *enginev1.LockRequest) (*enginev1.LockResponse, error) {
			calls++
			switch calls {
			case 1:
				return nil, status.Error(codes.Unavailable, "connection reset")
			case 2:
				// What tonic answers when the grpc-timeout runs out.
				return nil, status.Error(codes.Canceled, "Timeout expired")
			}
			return &enginev1.LockResponse{Key: queueKey(r.Name, LeaseID(r.Lease)), Revision: 77}, nil
		}
	})
	follower := startFakeCoord(t, func(f *fakeCoord) {
		f.lock = func(context.Context, *enginev1.LockRequest) (*enginev1.LockResponse, error) {
			return nil, notLeader("2", leader.addr)
		}
	})
	c := newTestClient(t, []string{follower.addr})
	l, err := c.Lock(testCtx(t), "jobs", WithSessionLease(0x2a))
	if err != nil {
		t.Fatal(err)
	}
	if string(l.Key()) != "jobs/000000000000002a" || l.Revision() != 77 || l.Lease() != 0x2a || l.Name() != "jobs" {
		t.Fatalf("lock: key %q rev %d lease %d", l.Key(), l.Revision(), l.Lease())
	}
	// The follower is asked first, and again after each failure of the
	// leader (UNAVAILABLE and a timed-out attempt make the client forget
	// the leader); it redirects each time.
	if n := len(follower.lockRequests()); n != 3 {
		t.Fatalf("%d Lock calls on the follower, want 3", n)
	}
	reqs := leader.lockRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d Lock calls on the leader, want 3", len(reqs))
	}
	for _, r := range append(reqs, follower.lockRequests()...) {
		if r.Lease != 0x2a || string(r.Name) != "jobs" {
			t.Fatalf("Lock request %v", r)
		}
	}
	select {
	case <-l.Lost():
		t.Fatal("Lost closed while held")
	default:
	}
	if err := l.Unlock(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if u := leader.unlockRequests(); len(u) != 1 || string(u[0].Key) != "jobs/000000000000002a" {
		t.Fatalf("Unlock requests %v", u)
	}
	<-l.Lost()
	if !errors.Is(l.Err(), ErrNotHeld) {
		t.Fatalf("Err after Unlock: %v", l.Err())
	}
	// A second Unlock is a no-op.
	if err := l.Unlock(testCtx(t)); err != nil || len(leader.unlockRequests()) != 1 {
		t.Fatalf("second Unlock: %v, %d requests", err, len(leader.unlockRequests()))
	}
}

// A Lock call that is still waiting when its attempt times out is made
// again with the same lease; when the caller's ctx ends, the queued key is
// removed with Unlock.
func TestLockAttemptTimeoutAndGiveUp(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 5s attempt timeout")
	}
	f := startFakeCoord(t, func(f *fakeCoord) {
		f.lock = func(ctx context.Context, r *enginev1.LockRequest) (*enginev1.LockResponse, error) {
			<-ctx.Done() // queued behind a holder that never leaves
			return nil, status.Error(codes.DeadlineExceeded, "waiting")
		}
	})
	c := newTestClient(t, []string{f.addr}, WithRequestTimeout(500*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Lock(ctx, "busy", WithSessionLease(5))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Lock: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 6*time.Second {
		t.Fatalf("gave up after %v, before the caller's deadline", d)
	}
	reqs := f.lockRequests()
	if len(reqs) != 2 {
		t.Fatalf("%d Lock attempts in 7s with 5s attempts, want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.Lease != 5 {
			t.Fatalf("attempt with lease %d", r.Lease)
		}
	}
	if u := f.unlockRequests(); len(u) != 1 || string(u[0].Key) != "busy/0000000000000005" {
		t.Fatalf("the abandoned queue key was not removed: %v", u)
	}
}

// NOT_HELD maps to ErrNotHeld; Resign of a lost leadership is not an error.
func TestElectionNotHeld(t *testing.T) {
	f := startFakeCoord(t, func(f *fakeCoord) {
		f.proclaim = func(context.Context, *enginev1.ProclaimRequest) (*enginev1.ProclaimResponse, error) {
			return nil, dengineErr(codes.FailedPrecondition, "NOT_HELD", "leadership lost", nil)
		}
		f.resign = func(context.Context, *enginev1.ResignRequest) (*enginev1.ResignResponse, error) {
			return nil, dengineErr(codes.FailedPrecondition, "NOT_HELD", "leadership lost", nil)
		}
	})
	c := newTestClient(t, []string{f.addr})
	sess := &coordSession{c: c, lease: 9, lost: make(chan struct{})}
	ld := &Leadership{c: c, name: []byte("e"), key: queueKey([]byte("e"), 9), rev: 3, sess: sess}
	err := ld.Proclaim(testCtx(t), []byte("v"))
	if !errors.Is(err, ErrNotHeld) || IsRetryable(err) {
		t.Fatalf("Proclaim: %v, want ErrNotHeld (not retryable)", err)
	}
	if err := ld.Resign(testCtx(t)); err != nil {
		t.Fatalf("Resign of a lost leadership: %v", err)
	}
	if _, err := c.Campaign(testCtx(t), "", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Campaign with an empty name: %v", err)
	}
}

// Observe re-opens a broken stream and does not deliver a leader twice.
func TestObserveReopens(t *testing.T) {
	kv := func(key, val string, rev uint64) *enginev1.ElectionLeaderResponse {
		return &enginev1.ElectionLeaderResponse{Kv: &enginev1.KeyValue{Key: []byte(key), Value: []byte(val), CreateRevision: rev, ModRevision: rev}}
	}
	f := startFakeCoord(t, func(f *fakeCoord) {
		f.observe = func(n int, r *enginev1.ElectionLeaderRequest, s enginev1.Election_ObserveServer) error {
			switch n {
			case 1:
				if err := s.Send(kv("e/1", "a", 5)); err != nil {
					return err
				}
				return status.Error(codes.Unavailable, "leader stepped down")
			case 2:
				_ = s.Send(kv("e/1", "a", 5)) // the same leader again
				_ = s.Send(kv("e/2", "b", 9))
				<-s.Context().Done()
				return nil
			}
			return status.Error(codes.Internal, "too many observes")
		}
	})
	c := newTestClient(t, []string{f.addr})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	events, err := c.Observe(ctx, "e")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev := range events {
		if ev.Err != nil {
			t.Fatalf("observe: %v", ev.Err)
		}
		got = append(got, string(ev.Leader.Key)+"="+string(ev.Leader.Value))
		if len(got) == 2 {
			cancel()
		}
	}
	if len(got) != 2 || got[0] != "e/1=a" || got[1] != "e/2=b" {
		t.Fatalf("observed %v, want [e/1=a e/2=b]", got)
	}
}
