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

// fakeNode is an in-process gRPC server on 127.0.0.1:0 implementing the Kv
// and Cluster services with scripted behaviour. Handlers left nil answer
// UNIMPLEMENTED. Every request is recorded.
type fakeNode struct {
	enginev1.UnimplementedKvServer
	enginev1.UnimplementedClusterServer

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
	members func(context.Context, *enginev1.MembersRequest) (*enginev1.MembersResponse, error)
	leader  func(context.Context, *enginev1.LeaderRequest) (*enginev1.LeaderResponse, error)
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
