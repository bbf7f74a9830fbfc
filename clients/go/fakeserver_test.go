package dengine

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// fakeNode is an in-process gRPC server on 127.0.0.1:0 implementing the Kv,
// Lease and Cluster services with scripted behaviour. Handlers left nil answer
// UNIMPLEMENTED. Every request is recorded.
type fakeNode struct {
	enginev1.UnimplementedKvServer
	enginev1.UnimplementedClusterServer
	enginev1.UnimplementedLeaseServer

	addr string
	srv  *grpc.Server

	mu       sync.Mutex
	requests []proto.Message

	put     func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error)
	get     func(context.Context, *enginev1.GetRequest) (*enginev1.GetResponse, error)
	getMany func(context.Context, *enginev1.GetMultiRequest) (*enginev1.GetMultiResponse, error)
	del     func(context.Context, *enginev1.DeleteRequest) (*enginev1.DeleteResponse, error)
	cas     func(context.Context, *enginev1.CompareAndSwapRequest) (*enginev1.CompareAndSwapResponse, error)
	scan    func(context.Context, *enginev1.ScanPrefixRequest) (*enginev1.ScanPrefixResponse, error)
	watch   func(*enginev1.WatchRequest, enginev1.Kv_WatchServer) error
	rng     func(context.Context, *enginev1.RangeRequest) (*enginev1.RangeResponse, error)
	delRng  func(context.Context, *enginev1.DeleteRangeRequest) (*enginev1.DeleteRangeResponse, error)
	txn     func(context.Context, *enginev1.TxnRequest) (*enginev1.TxnResponse, error)
	grant   func(context.Context, *enginev1.LeaseGrantRequest) (*enginev1.LeaseGrantResponse, error)
	revoke  func(context.Context, *enginev1.LeaseRevokeRequest) (*enginev1.LeaseRevokeResponse, error)
	renew   func(context.Context, *enginev1.LeaseKeepAliveRequest) (*enginev1.LeaseKeepAliveResponse, error)
	ttl     func(context.Context, *enginev1.LeaseTimeToLiveRequest) (*enginev1.LeaseTimeToLiveResponse, error)
	list    func(context.Context, *enginev1.LeaseListRequest) (*enginev1.LeaseListResponse, error)
	// keepAlive serves a LeaseKeepAlive stream (its requests are recorded
	// by recvKeepAlive).
	keepAlive func(n *fakeNode, s enginev1.Lease_LeaseKeepAliveServer) error
	members   func(context.Context, *enginev1.MembersRequest) (*enginev1.MembersResponse, error)
	leader    func(context.Context, *enginev1.LeaderRequest) (*enginev1.LeaderResponse, error)
}

func startFake(t *testing.T, configure func(n *fakeNode)) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{addr: lis.Addr().String(), srv: grpc.NewServer()}
	if configure != nil {
		configure(n)
	}
	enginev1.RegisterKvServer(n.srv, n)
	enginev1.RegisterClusterServer(n.srv, n)
	enginev1.RegisterLeaseServer(n.srv, n)
	go func() { _ = n.srv.Serve(lis) }()
	t.Cleanup(n.srv.Stop)
	return n
}

func (n *fakeNode) record(m proto.Message) {
	n.mu.Lock()
	n.requests = append(n.requests, proto.Clone(m))
	n.mu.Unlock()
}

func (n *fakeNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

func (n *fakeNode) recorded() []proto.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]proto.Message(nil), n.requests...)
}

func unimpl() error { return status.Error(codes.Unimplemented, "not scripted") }

func (n *fakeNode) Put(ctx context.Context, r *enginev1.PutRequest) (*enginev1.PutResponse, error) {
	n.record(r)
	if n.put == nil {
		return nil, unimpl()
	}
	return n.put(ctx, r)
}

func (n *fakeNode) Get(ctx context.Context, r *enginev1.GetRequest) (*enginev1.GetResponse, error) {
	n.record(r)
	if n.get == nil {
		return nil, unimpl()
	}
	return n.get(ctx, r)
}

func (n *fakeNode) GetMulti(ctx context.Context, r *enginev1.GetMultiRequest) (*enginev1.GetMultiResponse, error) {
	n.record(r)
	if n.getMany == nil {
		return nil, unimpl()
	}
	return n.getMany(ctx, r)
}

func (n *fakeNode) Delete(ctx context.Context, r *enginev1.DeleteRequest) (*enginev1.DeleteResponse, error) {
	n.record(r)
	if n.del == nil {
		return nil, unimpl()
	}
	return n.del(ctx, r)
}

func (n *fakeNode) CompareAndSwap(ctx context.Context, r *enginev1.CompareAndSwapRequest) (*enginev1.CompareAndSwapResponse, error) {
	n.record(r)
	if n.cas == nil {
		return nil, unimpl()
	}
	return n.cas(ctx, r)
}

func (n *fakeNode) ScanPrefix(ctx context.Context, r *enginev1.ScanPrefixRequest) (*enginev1.ScanPrefixResponse, error) {
	n.record(r)
	if n.scan == nil {
		return nil, unimpl()
	}
	return n.scan(ctx, r)
}

func (n *fakeNode) Watch(r *enginev1.WatchRequest, s enginev1.Kv_WatchServer) error {
	n.record(r)
	if n.watch == nil {
		return unimpl()
	}
	return n.watch(r, s)
}

func (n *fakeNode) Range(ctx context.Context, r *enginev1.RangeRequest) (*enginev1.RangeResponse, error) {
	n.record(r)
	if n.rng == nil {
		return nil, unimpl()
	}
	return n.rng(ctx, r)
}

func (n *fakeNode) DeleteRange(ctx context.Context, r *enginev1.DeleteRangeRequest) (*enginev1.DeleteRangeResponse, error) {
	n.record(r)
	if n.delRng == nil {
		return nil, unimpl()
	}
	return n.delRng(ctx, r)
}

func (n *fakeNode) Txn(ctx context.Context, r *enginev1.TxnRequest) (*enginev1.TxnResponse, error) {
	n.record(r)
	if n.txn == nil {
		return nil, unimpl()
	}
	return n.txn(ctx, r)
}

func (n *fakeNode) LeaseGrant(ctx context.Context, r *enginev1.LeaseGrantRequest) (*enginev1.LeaseGrantResponse, error) {
	n.record(r)
	if n.grant == nil {
		return nil, unimpl()
	}
	return n.grant(ctx, r)
}

func (n *fakeNode) LeaseRevoke(ctx context.Context, r *enginev1.LeaseRevokeRequest) (*enginev1.LeaseRevokeResponse, error) {
	n.record(r)
	if n.revoke == nil {
		return nil, unimpl()
	}
	return n.revoke(ctx, r)
}

func (n *fakeNode) LeaseRenew(ctx context.Context, r *enginev1.LeaseKeepAliveRequest) (*enginev1.LeaseKeepAliveResponse, error) {
	n.record(r)
	if n.renew == nil {
		return nil, unimpl()
	}
	return n.renew(ctx, r)
}

func (n *fakeNode) LeaseTimeToLive(ctx context.Context, r *enginev1.LeaseTimeToLiveRequest) (*enginev1.LeaseTimeToLiveResponse, error) {
	n.record(r)
	if n.ttl == nil {
		return nil, unimpl()
	}
	return n.ttl(ctx, r)
}

func (n *fakeNode) LeaseList(ctx context.Context, r *enginev1.LeaseListRequest) (*enginev1.LeaseListResponse, error) {
	n.record(r)
	if n.list == nil {
		return nil, unimpl()
	}
	return n.list(ctx, r)
}

func (n *fakeNode) LeaseKeepAlive(s enginev1.Lease_LeaseKeepAliveServer) error {
	if n.keepAlive == nil {
		return unimpl()
	}
	return n.keepAlive(n, s)
}

// recvKeepAlive receives (and records) the next request of a keepalive
// stream.
func (n *fakeNode) recvKeepAlive(s enginev1.Lease_LeaseKeepAliveServer) (*enginev1.LeaseKeepAliveRequest, error) {
	r, err := s.Recv()
	if err == nil {
		n.record(r)
	}
	return r, err
}

func (n *fakeNode) Members(ctx context.Context, r *enginev1.MembersRequest) (*enginev1.MembersResponse, error) {
	n.record(r)
	if n.members == nil {
		return nil, unimpl()
	}
	return n.members(ctx, r)
}

func (n *fakeNode) Leader(ctx context.Context, r *enginev1.LeaderRequest) (*enginev1.LeaderResponse, error) {
	n.record(r)
	if n.leader == nil {
		return nil, unimpl()
	}
	return n.leader(ctx, r)
}

// dengineErr builds a server error the way d-engine-server does.
func dengineErr(c codes.Code, reason, msg string, md map[string]string) error {
	st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason, Metadata: md})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func notLeader(leaderID, leaderAddr string) error {
	return dengineErr(codes.Unavailable, "NOT_LEADER", "not the leader", map[string]string{"leader_id": leaderID, "leader_addr": leaderAddr})
}

func noLeader() error {
	return dengineErr(codes.Unavailable, "NO_LEADER", "election in progress", nil)
}
