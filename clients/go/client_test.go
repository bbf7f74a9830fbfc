package dengine

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// fastRetry keeps retry tests quick.
var fastRetry = WithRetryPolicy(6, time.Millisecond, 10*time.Millisecond)

func newTestClient(t *testing.T, eps []string, opts ...Option) *Client {
	t.Helper()
	c, err := NewClientWithOptions(eps, append([]Option{fastRetry, WithRequestTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func okPut(rev uint64) func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
	return func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
		return &enginev1.PutResponse{Revision: rev}, nil
	}
}

func writeIDs(msgs []proto.Message) []*enginev1.WriteId {
	var out []*enginev1.WriteId
	for _, m := range msgs {
		if p, ok := m.(*enginev1.PutRequest); ok {
			out = append(out, p.GetWriteId())
		}
	}
	return out
}

// A follower answers NOT_LEADER with the leader's address: the client follows
// it, and later writes go straight to the leader.
func TestFollowsNotLeaderHint(t *testing.T) {
	leader := startFake(t, func(n *fakeNode) { n.put = okPut(7) })
	follower := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, notLeader("2", leader.addr)
		}
	})
	// A huge backoff proves the redirect is followed without sleeping.
	c := newTestClient(t, []string{follower.addr}, WithRetryPolicy(3, time.Minute, time.Minute))
	ctx := testCtx(t)
	start := time.Now()
	rev, err := c.Put(ctx, []byte("k"), []byte("v"))
	if err != nil || rev != 7 {
		t.Fatalf("Put = %d, %v", rev, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("redirect took %v: it slept a backoff", el)
	}
	if _, err := c.Put(ctx, []byte("k"), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if follower.count() != 1 || leader.count() != 2 {
		t.Fatalf("follower got %d requests (want 1), leader %d (want 2)", follower.count(), leader.count())
	}
	// The redirected attempt reused the WriteId of the first attempt.
	fid := writeIDs(follower.recorded())[0]
	lids := writeIDs(leader.recorded())
	if !proto.Equal(fid, lids[0]) {
		t.Fatalf("redirect changed the WriteId: %v then %v", fid, lids[0])
	}
	if fid.GetClientId() == 0 {
		t.Fatal("writes must carry a non-zero client id")
	}
	if lids[1].GetClientId() != fid.GetClientId() || lids[1].GetSeq() != fid.GetSeq()+1 {
		t.Fatalf("second write: WriteId %v, want client %d seq %d", lids[1], fid.GetClientId(), fid.GetSeq()+1)
	}
}

// Retryable errors are retried with the same WriteId until success.
func TestRetriesKeepWriteID(t *testing.T) {
	var calls atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			switch calls.Add(1) {
			case 1:
				return nil, noLeader()
			case 2:
				return nil, dengineErr(codes.ResourceExhausted, "OVERLOADED", "queue full", nil)
			case 3:
				return nil, status.Error(codes.Unavailable, "transport is closing")
			}
			return &enginev1.PutResponse{Revision: 3}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	if _, err := c.Put(testCtx(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	ids := writeIDs(node.recorded())
	if len(ids) != 4 {
		t.Fatalf("%d attempts, want 4", len(ids))
	}
	for _, id := range ids[1:] {
		if !proto.Equal(id, ids[0]) {
			t.Fatalf("WriteIds differ across retries: %v", ids)
		}
	}
}

// A request that outlives the per-attempt timeout is retried (same WriteId).
func TestAttemptTimeoutRetries(t *testing.T) {
	var calls atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.put = func(ctx context.Context, _ *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done() // hang until the client gives up on this attempt
				return nil, ctx.Err()
			}
			return &enginev1.PutResponse{Revision: 1}, nil
		}
	})
	c := newTestClient(t, []string{node.addr}, WithRequestTimeout(200*time.Millisecond))
	if _, err := c.Put(testCtx(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	ids := writeIDs(node.recorded())
	if len(ids) != 2 || !proto.Equal(ids[0], ids[1]) {
		t.Fatalf("want 2 attempts with one WriteId, got %v", ids)
	}
}

// Concurrent writes never share a client id with the same seq, and a client
// id never has two writes in flight.
func TestConcurrentWritesUseDistinctSessions(t *testing.T) {
	inflight := map[uint64]bool{}
	var violation atomic.Bool
	release := make(chan struct{})
	var mu = make(chan struct{}, 1)
	node := startFake(t, func(n *fakeNode) {
		n.put = func(_ context.Context, r *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			id := r.GetWriteId().GetClientId()
			mu <- struct{}{}
			if inflight[id] {
				violation.Store(true)
			}
			inflight[id] = true
			<-mu
			<-release
			mu <- struct{}{}
			delete(inflight, id)
			<-mu
			return &enginev1.PutResponse{Revision: 1}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)
	const writers = 8
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		go func() {
			_, err := c.Put(ctx, []byte("k"), []byte("v"))
			errs <- err
		}()
	}
	// Wait until all are in flight, then let them finish.
	deadline := time.Now().Add(5 * time.Second)
	for node.count() < writers && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	for i := 0; i < writers; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if violation.Load() {
		t.Fatal("two writes were in flight with the same client id")
	}
	seen := map[[2]uint64]bool{}
	for _, id := range writeIDs(node.recorded()) {
		k := [2]uint64{id.GetClientId(), id.GetSeq()}
		if seen[k] {
			t.Fatalf("WriteId %v used by two writes", id)
		}
		seen[k] = true
	}
}

func TestNonRetryableErrorReturnedAtOnce(t *testing.T) {
	node := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, dengineErr(codes.InvalidArgument, "INVALID_ARGUMENT", "value too large",
				map[string]string{"field": "value", "limit": "1048576"})
		}
	})
	c := newTestClient(t, []string{node.addr})
	_, err := c.Put(testCtx(t), []byte("k"), []byte("v"))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("got %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Metadata["field"] != "value" || e.Endpoint != node.addr {
		t.Fatalf("details lost: %+v", e)
	}
	if node.count() != 1 {
		t.Fatalf("non-retryable error was retried: %d attempts", node.count())
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	node := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) { return nil, noLeader() }
	})
	c := newTestClient(t, []string{node.addr}, WithRetryPolicy(4, time.Millisecond, 2*time.Millisecond))
	_, err := c.Put(testCtx(t), []byte("k"), []byte("v"))
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("got %v", err)
	}
	if node.count() != 4 {
		t.Fatalf("%d attempts, want 4", node.count())
	}
}

// The caller's deadline ends retries with ErrTimeout (also
// context.DeadlineExceeded).
func TestContextDeadline(t *testing.T) {
	node := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) { return nil, noLeader() }
	})
	c := newTestClient(t, []string{node.addr}, WithRetryPolicy(1000, 20*time.Millisecond, 20*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err := c.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.Put(ctx2, []byte("k"), []byte("v")); !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// A dead endpoint is skipped; a NOT_LEADER without a hint rotates on.
func TestRotatesPastDeadAndHintlessNodes(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close() // nothing listens here any more
	hintless := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, notLeader("0", "")
		}
	})
	leader := startFake(t, func(n *fakeNode) { n.put = okPut(5) })
	c := newTestClient(t, []string{dead, hintless.addr, leader.addr}, WithRetryPolicy(10, time.Millisecond, 5*time.Millisecond))
	for i := 0; i < 3; i++ {
		if _, err := c.Put(testCtx(t), []byte("k"), []byte("v")); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if leader.count() != 3 {
		t.Fatalf("leader served %d of 3 writes", leader.count())
	}
	if hintless.count() > 1 {
		t.Fatalf("the leader was not remembered: follower asked %d times", hintless.count())
	}
}

// When the leader dies, the client finds the new one.
func TestLeaderFailover(t *testing.T) {
	var newLeader *fakeNode
	old := startFake(t, func(n *fakeNode) { n.put = okPut(1) })
	newLeader = startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return &enginev1.PutResponse{Revision: 2}, nil
		}
	})
	c := newTestClient(t, []string{old.addr, newLeader.addr})
	c.setLeader(old.addr)
	if rev, err := c.Put(testCtx(t), []byte("k"), []byte("v")); err != nil || rev != 1 {
		t.Fatalf("%d %v", rev, err)
	}
	old.srv.Stop()
	rev, err := c.Put(testCtx(t), []byte("k"), []byte("v"))
	if err != nil || rev != 2 {
		t.Fatalf("after failover: %d %v", rev, err)
	}
}

func TestReadsAndCAS(t *testing.T) {
	node := startFake(t, func(n *fakeNode) {
		n.get = func(_ context.Context, r *enginev1.GetRequest) (*enginev1.GetResponse, error) {
			if string(r.GetKey()) == "missing" {
				return &enginev1.GetResponse{}, nil
			}
			return &enginev1.GetResponse{Kv: &enginev1.KeyValue{Key: r.Key, Value: []byte("v"), CreateRevision: 3, ModRevision: 9, Version: 4, ExpiresAtMs: 1700000000123}}, nil
		}
		n.getMany = func(_ context.Context, r *enginev1.GetMultiRequest) (*enginev1.GetMultiResponse, error) {
			out := &enginev1.GetMultiResponse{}
			for _, k := range r.GetKeys() {
				g := &enginev1.GetResponse{}
				if string(k) != "missing" {
					g.Kv = &enginev1.KeyValue{Key: k, Value: []byte("v")}
				}
				out.Results = append(out.Results, g)
			}
			return out, nil
		}
		n.cas = func(_ context.Context, r *enginev1.CompareAndSwapRequest) (*enginev1.CompareAndSwapResponse, error) {
			return &enginev1.CompareAndSwapResponse{Succeeded: r.ExpectedValue == nil, Revision: 11}, nil
		}
		n.rng = func(_ context.Context, r *enginev1.RangeRequest) (*enginev1.RangeResponse, error) {
			if string(r.GetKey()) != "p/" || string(r.GetRangeEnd()) != "p0" || r.GetLimit() != 2 {
				return nil, status.Errorf(codes.InvalidArgument, "unexpected scan request %v", r)
			}
			return &enginev1.RangeResponse{
				Header:  &enginev1.ResponseHeader{Revision: 12},
				Kvs:     []*enginev1.KeyValue{{Key: []byte("p/1")}, {Key: []byte("p/2")}},
				More:    true,
				Count:   3,
				NextKey: []byte("p/2\x00"),
			}, nil
		}
		n.del = func(context.Context, *enginev1.DeleteRequest) (*enginev1.DeleteResponse, error) {
			return &enginev1.DeleteResponse{Deleted: true}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)

	kv, err := c.Get(ctx, []byte("k"), WithConsistency(Lease))
	if err != nil || kv == nil || string(kv.Value) != "v" || kv.ModRevision != 9 || kv.CreateRevision != 3 || kv.Version != 4 {
		t.Fatalf("Get = %+v, %v", kv, err)
	}
	if kv.ExpiresAt.UnixMilli() != 1700000000123 {
		t.Fatalf("ExpiresAt = %v", kv.ExpiresAt)
	}
	if kv, err := c.Get(ctx, []byte("missing")); err != nil || kv != nil {
		t.Fatalf("missing key: %+v, %v", kv, err)
	}
	if _, err := c.Get(ctx, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
	kvs, err := c.GetMulti(ctx, [][]byte{[]byte("a"), []byte("missing"), []byte("b")}, WithConsistency(Eventual))
	if err != nil || len(kvs) != 3 || kvs[0] == nil || kvs[1] != nil || string(kvs[2].Key) != "b" {
		t.Fatalf("GetMulti = %v, %v", kvs, err)
	}
	res, err := c.CompareAndSwap(ctx, []byte("k"), nil, []byte("new"))
	if err != nil || !res.Succeeded || res.Revision != 11 {
		t.Fatalf("CAS(nil) = %+v, %v", res, err)
	}
	res, err = c.CompareAndSwap(ctx, []byte("k"), []byte{}, []byte{}, WithCASTTL(1500*time.Microsecond))
	if err != nil || res.Succeeded {
		t.Fatalf("CAS([]byte{}) = %+v, %v", res, err)
	}
	if _, err := c.CompareAndSwap(ctx, []byte("k"), []byte("old"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CompareAndDelete(ctx, []byte("k"), []byte("old")); err != nil {
		t.Fatal(err)
	}
	scan, err := c.ScanPrefix(ctx, []byte("p/"), 2)
	if err != nil || len(scan.KVs) != 2 || !scan.More || scan.Revision != 12 {
		t.Fatalf("ScanPrefix = %+v, %v", scan, err)
	}
	if _, err := c.ScanPrefix(ctx, []byte("p/"), -1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative limit: %v", err)
	}
	if ok, err := c.Delete(ctx, []byte("k")); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}

	// What went over the wire.
	var sawLease, sawEventual bool
	var casReqs []*enginev1.CompareAndSwapRequest
	for _, m := range node.recorded() {
		switch r := m.(type) {
		case *enginev1.GetRequest:
			sawLease = sawLease || r.GetConsistency() == enginev1.Consistency_LEASE
		case *enginev1.GetMultiRequest:
			sawEventual = r.GetConsistency() == enginev1.Consistency_EVENTUAL
		case *enginev1.CompareAndSwapRequest:
			casReqs = append(casReqs, r)
		}
	}
	if !sawLease || !sawEventual {
		t.Fatal("consistency not sent")
	}
	if len(casReqs) != 4 {
		t.Fatalf("%d CAS requests", len(casReqs))
	}
	if casReqs[0].ExpectedValue != nil || !bytes.Equal(casReqs[0].NewValue, []byte("new")) {
		t.Fatalf("CAS with nil expected must omit expected_value: %v", casReqs[0])
	}
	if casReqs[1].ExpectedValue == nil || len(casReqs[1].ExpectedValue) != 0 || casReqs[1].NewValue == nil || casReqs[1].TtlMs != 2 {
		t.Fatalf("CAS with empty expected and an empty new value: %v", casReqs[1])
	}
	if casReqs[2].NewValue != nil || string(casReqs[2].ExpectedValue) != "old" {
		t.Fatalf("CAS with a nil new value must omit new_value (delete): %v", casReqs[2])
	}
	if casReqs[3].NewValue != nil || string(casReqs[3].ExpectedValue) != "old" {
		t.Fatalf("CompareAndDelete must omit new_value: %v", casReqs[3])
	}
	if casReqs[0].GetWriteId().GetSeq() == casReqs[1].GetWriteId().GetSeq() &&
		casReqs[0].GetWriteId().GetClientId() == casReqs[1].GetWriteId().GetClientId() {
		t.Fatal("two CAS writes share a WriteId")
	}
}

func TestMembersAndLeader(t *testing.T) {
	var calls atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.members = func(context.Context, *enginev1.MembersRequest) (*enginev1.MembersResponse, error) {
			return &enginev1.MembersResponse{LeaderId: 2, Members: []*enginev1.Member{
				{Id: 1, PeerAddr: "p1", ClientAddr: "c1", Role: enginev1.MemberRole_VOTER},
				{Id: 2, PeerAddr: "p2", ClientAddr: "c2", Role: enginev1.MemberRole_VOTER},
				{Id: 3, PeerAddr: "p3", Role: enginev1.MemberRole_LEARNER},
			}}, nil
		}
		n.leader = func(context.Context, *enginev1.LeaderRequest) (*enginev1.LeaderResponse, error) {
			if calls.Add(1) < 3 {
				return &enginev1.LeaderResponse{}, nil // election in progress
			}
			return &enginev1.LeaderResponse{LeaderId: 2, LeaderAddr: "127.0.0.1:1"}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ms, err := c.Members(testCtx(t))
	if err != nil || len(ms) != 3 {
		t.Fatalf("Members = %v, %v", ms, err)
	}
	if !ms[1].IsLeader || ms[0].IsLeader || ms[2].Role != RoleLearner || ms[0].ClientAddr != "c1" {
		t.Fatalf("Members = %+v", ms)
	}
	li, err := c.Leader(testCtx(t))
	if err != nil || li.ID != 2 || li.Addr != "127.0.0.1:1" {
		t.Fatalf("Leader = %+v, %v", li, err)
	}
	if c.leader != "127.0.0.1:1" {
		t.Fatalf("leader not cached: %q", c.leader)
	}
}

func TestClosedClient(t *testing.T) {
	node := startFake(t, func(n *fakeNode) { n.put = okPut(1) })
	c := newTestClient(t, []string{node.addr})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(testCtx(t), []byte("k"), []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// An overloaded leader is still the leader: the client backs off and retries
// it rather than wandering to a follower.
func TestOverloadedLeaderIsRetried(t *testing.T) {
	var calls atomic.Int32
	leader := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			if calls.Add(1) == 1 {
				return nil, dengineErr(codes.ResourceExhausted, "OVERLOADED", "proposal queue full", nil)
			}
			return &enginev1.PutResponse{Revision: 1}, nil
		}
	})
	follower := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, notLeader("1", leader.addr)
		}
	})
	c := newTestClient(t, []string{follower.addr, leader.addr})
	c.setLeader(leader.addr)
	if _, err := c.Put(testCtx(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if leader.count() != 2 || follower.count() != 0 {
		t.Fatalf("leader asked %d times (want 2), follower %d (want 0)", leader.count(), follower.count())
	}
}
