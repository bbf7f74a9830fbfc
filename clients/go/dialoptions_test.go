package dengine

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// callLog is shared by several recorders.
type callLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *callLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// recorder is a pair of interceptors that log the methods they see.
type recorder struct {
	name string
	log  *callLog
}

func (r *recorder) add(s string) {
	r.log.mu.Lock()
	r.log.lines = append(r.log.lines, r.name+" "+s)
	r.log.mu.Unlock()
}

func (r *recorder) unary() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		r.add(method)
		return inv(ctx, method, req, reply, cc, opts...)
	}
}

func (r *recorder) stream() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, s grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		r.add("stream " + method)
		return s(ctx, desc, cc, method, opts...)
	}
}

// Interceptors see every attempt of every call, chained in the order given;
// WithDialOptions reaches the connection too.
func TestInterceptorsAndDialOptionsSeeTheCalls(t *testing.T) {
	log := &callLog{}
	outer := &recorder{name: "outer", log: log}
	inner := &recorder{name: "inner", log: log}
	var dials sync.Map
	dialer := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Store(addr, true)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	})

	leader := startFake(t, func(n *fakeNode) { n.put = okPut(5) })
	follower := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, notLeader("2", leader.addr)
		}
	})
	c := newTestClient(t, []string{follower.addr},
		WithUnaryInterceptor(outer.unary()),
		WithUnaryInterceptor(inner.unary()),
		WithStreamInterceptor(outer.stream()),
		WithDialOptions(dialer))
	if _, err := c.Put(testCtx(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	got := log.snapshot()
	put := enginev1.Kv_Put_FullMethodName
	// Two attempts (the follower, then the hinted leader), each through
	// both interceptors, outer first.
	want := []string{"outer " + put, "inner " + put, "outer " + put, "inner " + put}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("interceptors saw %q, want %q", got, want)
	}
	for _, a := range []string{follower.addr, leader.addr} {
		if _, ok := dials.Load(a); !ok {
			t.Fatalf("the dial option's dialer was not used for %s", a)
		}
	}
}

func TestDialOptionArgumentsAreChecked(t *testing.T) {
	for name, opt := range map[string]Option{
		"WithDialOptions":       WithDialOptions(grpc.WithUserAgent("x"), nil),
		"WithUnaryInterceptor":  WithUnaryInterceptor(nil),
		"WithStreamInterceptor": WithStreamInterceptor(nil),
	} {
		_, err := NewClientWithOptions([]string{"127.0.0.1:1"}, opt)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s: err = %v, want one naming the option", name, err)
		}
	}
}

// By default a hint outside the endpoints is followed; with
// WithRestrictToEndpoints it is not, and the client finds the leader among
// its endpoints instead.
func TestRestrictToEndpoints(t *testing.T) {
	// The cluster's advertised address of the leader is not reachable from
	// here (NAT, port forwarding): a port nothing listens on.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := lis.Addr().String()
	_ = lis.Close()

	leader := startFake(t, func(n *fakeNode) { n.put = okPut(9) })
	follower := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, notLeader("2", unreachable)
		}
	})

	// Default: the hint is followed (and fails: the address is unreachable).
	open := newTestClient(t, []string{follower.addr, leader.addr}, WithRetryPolicy(2, time.Millisecond, time.Millisecond))
	open.setLeader(follower.addr)
	if _, err := open.Put(testCtx(t), []byte("k"), []byte("v")); err == nil {
		t.Fatal("the default client should have followed the hint to the unreachable address")
	}
	if leader.count() != 0 {
		t.Fatalf("the default client wrote to the listed leader %d time(s)", leader.count())
	}

	// Restricted: the hint is ignored, the next endpoint serves.
	c := newTestClient(t, []string{follower.addr, leader.addr}, WithRestrictToEndpoints())
	c.setLeader(follower.addr)
	for i := 0; i < 3; i++ {
		rev, err := c.Put(testCtx(t), []byte("k"), []byte("v"))
		if err != nil || rev != 9 {
			t.Fatalf("Put %d = %d, %v", i, rev, err)
		}
	}
	// The follower also counts the default client's put (one attempt:
	// the second went to the hinted address).
	if follower.count() != 2 || leader.count() != 3 {
		t.Fatalf("follower got %d puts (want 1+1), leader %d (want 3: remembered)", follower.count(), leader.count())
	}
	if got := c.setLeader(unreachable); got != "" {
		t.Fatalf("setLeader accepted %q outside the endpoints", got)
	}
}

// Leader() under WithRestrictToEndpoints: the leader's advertised address
// is not usable, but the node that answered says it is the leader.
func TestRestrictedLeaderMapsTheAnsweringNode(t *testing.T) {
	self := startFake(t, func(n *fakeNode) {
		n.leader = func(context.Context, *enginev1.LeaderRequest) (*enginev1.LeaderResponse, error) {
			return &enginev1.LeaderResponse{Header: &enginev1.ResponseHeader{NodeId: 4}, LeaderId: 4, LeaderAddr: "10.255.0.4:9083"}, nil
		}
	})
	c := newTestClient(t, []string{self.addr}, WithRestrictToEndpoints())
	li, err := c.Leader(testCtx(t))
	if err != nil || li.ID != 4 {
		t.Fatalf("Leader = %+v, %v", li, err)
	}
	c.mu.Lock()
	got := c.leader
	c.mu.Unlock()
	if got != self.addr {
		t.Fatalf("leader cached as %q, want the endpoint %q", got, self.addr)
	}
}

// "https://" always means TLS: against a plaintext server the call fails
// and the server never sees a request; an "https://" leader hint is dialed
// with TLS although the endpoints are plaintext.
func TestHTTPSEndpointsAndHintsMeanTLS(t *testing.T) {
	plain := startFake(t, func(n *fakeNode) { n.put = okPut(1) })
	c := newTestClient(t, []string{"https://" + plain.addr}, WithRetryPolicy(1, 0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, []byte("k"), []byte("v")); err == nil {
		t.Fatal("a plaintext server answered an https:// endpoint")
	}
	if plain.count() != 0 {
		t.Fatalf("the plaintext server got %d request(s)", plain.count())
	}

	hinter := startFake(t, func(n *fakeNode) {
		n.put = func(context.Context, *enginev1.PutRequest) (*enginev1.PutResponse, error) {
			return nil, notLeader("2", "https://"+plain.addr)
		}
	})
	c2 := newTestClient(t, []string{hinter.addr}, WithRetryPolicy(2, time.Millisecond, time.Millisecond))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if _, err := c2.Put(ctx2, []byte("k"), []byte("v")); err == nil {
		t.Fatal("an https:// hint was followed in plaintext")
	}
	if plain.count() != 0 {
		t.Fatalf("the plaintext server got %d request(s) from an https:// hint", plain.count())
	}
}
