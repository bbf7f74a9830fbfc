package dengine

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// Client talks to a d-engine cluster. It is safe for concurrent use; create
// one per process and Close it when done.
//
// Writes and linearizable/lease reads go to the leader: the client remembers
// the leader, follows NOT_LEADER hints, and rotates through the endpoints when
// the leader is unknown or unreachable. Retryable errors (see IsRetryable)
// are retried under the RetryPolicy with exponential backoff and jitter.
//
// Writes are exactly-once across retries: each write carries a WriteId
// (client id, sequence number) that stays the same on every retry of that
// write, so the server applies it at most once and answers a retry with the
// original result. The client keeps a small pool of random client ids and
// uses each for one write at a time, so a client id never has two writes in
// flight and its sequence numbers reach the server in order.
type Client struct {
	cfg       config
	endpoints []endpoint
	useTLS    bool // TLS for addresses learned from hints (no scheme)

	mu     sync.Mutex
	conns  map[string]*conn
	leader string // client address of the leader; "" = unknown
	// leaderHTTPS: the leader came from an "https://" hint outside the
	// endpoints (dial it with TLS).
	leaderHTTPS bool
	rr          int // round-robin cursor into endpoints
	closed      bool
	done        chan struct{} // closed by Close

	sessMu   sync.Mutex
	sessions []*session // idle write sessions
}

type conn struct {
	addr    string
	cc      *grpc.ClientConn
	kv      enginev1.KvClient
	cluster enginev1.ClusterClient
	lease   enginev1.LeaseClient
}

type session struct {
	id  uint64
	seq uint64
}

// NewClient returns a client for the cluster reachable at endpoints
// ("host:port", "http://host:port" or "https://host:port"; port 9083 if
// omitted). "https://" always means TLS (with the system roots unless
// WithTLS/WithTLSFiles say otherwise), never plaintext. Give every member's
// client address if you can: any one of them suffices to find the leader
// (leader hints are followed, unless WithRestrictToEndpoints), but only
// listed endpoints are tried when the leader is unknown. NewClient does no network I/O; connections are made on
// first use. It fails only on invalid endpoints or options.
func NewClient(endpoints ...string) (*Client, error) {
	return NewClientWithOptions(endpoints)
}

// NewClientWithOptions is NewClient with options, for example:
//
//	c, err := dengine.NewClientWithOptions(
//		[]string{"10.0.0.1:9083", "10.0.0.2:9083", "10.0.0.3:9083"},
//		dengine.WithRequestTimeout(2*time.Second),
//		dengine.WithRetryPolicy(8, 50*time.Millisecond, time.Second))
func NewClientWithOptions(endpoints []string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("d-engine: NewClient: at least one endpoint is required (e.g. \"127.0.0.1:%s\")", DefaultPort)
	}
	c := &Client{
		cfg:   cfg,
		conns: make(map[string]*conn),
		done:  make(chan struct{}),
	}
	seen := map[string]bool{}
	allTLS := true
	for _, s := range endpoints {
		ep, err := parseEndpoint(s)
		if err != nil {
			return nil, err
		}
		if cfg.tls != nil {
			ep.tls = true
		}
		allTLS = allTLS && ep.tls
		if !seen[ep.addr] {
			seen[ep.addr] = true
			c.endpoints = append(c.endpoints, ep)
		}
	}
	c.useTLS = allTLS
	c.rr = mrand.IntN(len(c.endpoints))
	return c, nil
}

// Close closes every connection and ends every watch (their channels get a
// final ErrClosed). Operations after Close fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	conns := c.conns
	c.conns = map[string]*conn{}
	c.mu.Unlock()
	var errs []error
	for _, cn := range conns {
		if err := cn.cc.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Endpoints returns the normalised endpoint addresses the client was given.
func (c *Client) Endpoints() []string {
	out := make([]string, len(c.endpoints))
	for i, ep := range c.endpoints {
		out[i] = ep.addr
	}
	return out
}

// dial returns the connection for addr, creating it if needed.
func (c *Client) dial(addr string, useTLS bool) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, newError(CodeClosed, "client is closed", nil)
	}
	if cn, ok := c.conns[addr]; ok {
		return cn, nil
	}
	var creds credentials.TransportCredentials
	if useTLS {
		tc := c.cfg.tls
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		creds = credentials.NewTLS(tc)
	} else {
		creds = insecure.NewCredentials()
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   2 * time.Second,
			},
			MinConnectTimeout: c.cfg.dialTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes)),
		c.cfg.authDialOption(),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    10 * time.Second,
			Timeout: 5 * time.Second,
		}),
	}, c.cfg.dialOptions...)
	if len(c.cfg.unaryInts) > 0 {
		dialOpts = append(dialOpts, grpc.WithChainUnaryInterceptor(c.cfg.unaryInts...))
	}
	if len(c.cfg.streamInts) > 0 {
		dialOpts = append(dialOpts, grpc.WithChainStreamInterceptor(c.cfg.streamInts...))
	}
	dialOpts = append(dialOpts, c.cfg.testDialOptions...)
	cc, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return nil, newError(CodeInvalidArgument, fmt.Sprintf("endpoint %q: %v", addr, err), err)
	}
	cn := &conn{addr: addr, cc: cc, kv: enginev1.NewKvClient(cc), cluster: enginev1.NewClusterClient(cc), lease: enginev1.NewLeaseClient(cc)}
	c.conns[addr] = cn
	return cn, nil
}

// MaxResponseBytes is the largest response the client accepts (a full
// ScanPrefix page of large values can exceed gRPC's 4 MiB default).
const MaxResponseBytes = 256 << 20

// route says which node an operation should go to.
type route int

const (
	// routeLeader: the leader if known, else rotate through the endpoints.
	routeLeader route = iota
	// routeAny: rotate through the endpoints (eventual reads, cluster info).
	routeAny
)

// pick chooses the node for the next attempt.
func (c *Client) pick(r route) (*conn, error) {
	c.mu.Lock()
	addr, useTLS := c.leader, c.useTLS
	if r == routeAny || addr == "" {
		ep := c.endpoints[c.rr%len(c.endpoints)]
		if r == routeAny {
			c.rr++
		}
		addr, useTLS = ep.addr, ep.tls
	} else {
		useTLS = useTLS || c.leaderHTTPS
		for _, ep := range c.endpoints {
			if ep.addr == addr {
				useTLS = ep.tls
			}
		}
	}
	c.mu.Unlock()
	return c.dial(addr, useTLS)
}

// setLeader records a leader hint (a client address, possibly with
// scheme) and returns its normalised address; "" if the hint is unusable or,
// with WithRestrictToEndpoints, not one of the endpoints (then the leader
// is not changed).
func (c *Client) setLeader(hint string) string {
	ep, err := parseEndpoint(hint)
	if err != nil {
		return ""
	}
	listed := c.isEndpoint(ep.addr)
	if c.cfg.onlyListed && !listed {
		return ""
	}
	c.mu.Lock()
	c.leader = ep.addr
	// An "https://" hint is dialed with TLS even if the endpoints are not
	// all TLS: "https" never means plaintext.
	c.leaderHTTPS = ep.tls && !listed
	c.mu.Unlock()
	return ep.addr
}

// isEndpoint reports whether addr (normalised) is one of the endpoints.
func (c *Client) isEndpoint(addr string) bool {
	for _, ep := range c.endpoints {
		if ep.addr == addr {
			return true
		}
	}
	return false
}

// markFailed forgets addr as leader and moves the cursor past it.
func (c *Client) markFailed(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == addr {
		c.leader = ""
	}
	if c.endpoints[c.rr%len(c.endpoints)].addr == addr {
		c.rr++
	}
}

// backoffDelay is the sleep before retry n (0-based): min(max, base*2^n),
// jittered uniformly into [d/2, d].
func backoffDelay(p RetryPolicy, n int) time.Duration {
	d := p.BaseBackoff
	for i := 0; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + time.Duration(mrand.Int64N(int64(d-half)+1))
}

// ctxError turns the end of the caller's context into ErrTimeout/ErrCanceled,
// mentioning the last attempt's error.
func ctxError(ctx context.Context, attempts int, last *Error) *Error {
	cause := ctx.Err()
	code := CodeTimeout
	if errors.Is(cause, context.Canceled) {
		code = CodeCanceled
	}
	msg := fmt.Sprintf("%v after %d attempt(s)", cause, attempts)
	if last != nil {
		msg += "; last error: " + last.Error()
	}
	return &Error{Code: code, Message: msg, cause: cause}
}

// invoke runs call against the right node with leader discovery, redirects
// and retries. call gets a context bounded by the request timeout.
func (c *Client) invoke(ctx context.Context, r route, call func(ctx context.Context, cn *conn) error) error {
	pol := c.cfg.retry
	var last *Error
	immediate := false // next attempt follows a fresh redirect: no sleep
	redirects := 0     // consecutive redirects
	backoffs := 0      // sleeps so far
	for attempt := 0; attempt < pol.MaxAttempts; attempt++ {
		if attempt > 0 && !immediate {
			t := time.NewTimer(backoffDelay(pol, backoffs))
			backoffs++
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctxError(ctx, attempt, last)
			case <-c.done:
				t.Stop()
				return newError(CodeClosed, "client closed during retry", nil)
			}
		}
		immediate = false
		if ctx.Err() != nil {
			return ctxError(ctx, attempt, last)
		}
		cn, err := c.pick(r)
		if err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.requestTimeout)
		err = call(actx, cn)
		cancel()
		if err == nil {
			if r == routeLeader {
				c.mu.Lock()
				if c.leader == "" {
					c.leader = cn.addr
				}
				c.mu.Unlock()
			}
			return nil
		}
		e := FromStatus(err)
		if e.Endpoint == "" {
			e.Endpoint = cn.addr
		}
		if ctx.Err() != nil {
			return ctxError(ctx, attempt+1, e)
		}
		if e.Code == CodeCanceled && isClosed(c) {
			return newError(CodeClosed, "client closed", err)
		}
		e = unaskedCancel(e)
		last = e
		if !e.Code.retryable() {
			return e
		}
		if e.Code == CodeNotLeader && e.notLeader != nil && e.notLeader.LeaderAddr != "" {
			if addr := c.setLeader(e.notLeader.LeaderAddr); addr != "" && addr != cn.addr {
				immediate = redirects == 0 // a second redirect in a row backs off
				redirects++
				continue
			}
		}
		redirects = 0
		if e.Code != CodeOverloaded && e.Code != CodeChangeInProgress {
			// The node cannot serve us now: forget it as leader, try the next.
			// (An overloaded leader is still the leader: back off and retry it.)
			c.markFailed(cn.addr)
		}
	}
	if last != nil && pol.MaxAttempts > 1 {
		last.Message = fmt.Sprintf("%s (gave up after %d attempts)", last.Message, pol.MaxAttempts)
	}
	return last
}

// unaskedCancel reclassifies a CANCELLED status the caller did not ask for
// (its context is still live and the client is open): the server or the
// transport ended the call, e.g. a server-side request timeout ("Timeout
// expired") or a stream reset by a node going away. That is an attempt
// that ran out of time, so it becomes CodeTimeout: retried like any
// timeout (safe for reads and for writes, which carry their WriteId). The
// caller must have ruled out its own cancellation and a closed client first.
func unaskedCancel(e *Error) *Error {
	if e.Code != CodeCanceled || e.GRPCCode != codes.Canceled || e.fromServer {
		return e
	}
	out := *e
	out.Code = CodeTimeout
	out.Message = "call cancelled by the server or transport (not by the caller): " + e.Message
	return &out
}

func isClosed(c *Client) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// acquireSession takes an idle write session (or makes one with a fresh
// random client id) and advances its sequence number.
func (c *Client) acquireSession() *enginev1.WriteId {
	c.sessMu.Lock()
	var s *session
	if n := len(c.sessions); n > 0 {
		s = c.sessions[n-1]
		c.sessions = c.sessions[:n-1]
	}
	c.sessMu.Unlock()
	if s == nil {
		s = &session{id: randomClientID()}
	}
	s.seq++
	return &enginev1.WriteId{ClientId: s.id, Seq: s.seq}
}

func (c *Client) releaseSession(w *enginev1.WriteId) {
	c.sessMu.Lock()
	c.sessions = append(c.sessions, &session{id: w.ClientId, seq: w.Seq})
	c.sessMu.Unlock()
}

// randomClientID returns a non-zero random id (0 disables deduplication).
func randomClientID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("d-engine: crypto/rand failed: " + err.Error())
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// write runs a write RPC with one WriteId shared by all its retries.
func (c *Client) write(ctx context.Context, call func(ctx context.Context, cn *conn, id *enginev1.WriteId) error) error {
	id := c.acquireSession()
	defer c.releaseSession(id)
	return c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		return call(ctx, cn, id)
	})
}
