package dengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// LeaseID names a lease; 0 means "no lease".
type LeaseID uint64

// MaxLeaseTTL is the longest TTL a lease can be granted with.
const MaxLeaseTTL = 365 * 24 * time.Hour

// LeaseGrantResult is the outcome of Grant.
type LeaseGrantResult struct {
	ID LeaseID
	// TTL is the lease's time to live, as granted.
	TTL time.Duration
	// Revision is the revision of the grant.
	Revision uint64
}

// LeaseRevokeResult is the outcome of Revoke.
type LeaseRevokeResult struct {
	// Deleted is the number of keys deleted with the lease.
	Deleted uint64
	// Revision is the revision of the revoke.
	Revision uint64
}

// LeaseTimeToLiveResult describes a live lease.
type LeaseTimeToLiveResult struct {
	ID LeaseID
	// GrantedTTL is the TTL the lease was granted with.
	GrantedTTL time.Duration
	// Remaining is the time left on the leader's clock.
	Remaining time.Duration
	// Keys are the attached keys (TimeToLive with withKeys; cut short at the
	// response byte budget, see KeyCount).
	Keys [][]byte
	// KeyCount is the number of attached keys.
	KeyCount uint64
}

// LeaseStatus is one entry of Leases.
type LeaseStatus struct {
	ID         LeaseID
	GrantedTTL time.Duration
}

// GrantOption configures Grant.
type GrantOption func(*grantConfig)

type grantConfig struct{ id LeaseID }

// WithLeaseID asks Grant for this id instead of one the server picks. It must
// not name a live lease (ErrInvalidArgument).
func WithLeaseID(id LeaseID) GrantOption {
	return func(g *grantConfig) { g.id = id }
}

func checkLeaseID(id LeaseID) error {
	if id == 0 {
		return newError(CodeInvalidArgument, "lease id must not be 0", nil)
	}
	return nil
}

// Grant creates a lease with the given time to live (1ms .. MaxLeaseTTL,
// rounded up to whole milliseconds). Attach keys with Put(..., WithLease(id))
// or OpPut; keep the lease alive with KeepAlive (or Renew); when it expires
// or is revoked, all its keys are deleted in one replicated step.
//
// Expiry is decided by the leader. A lease never expires before its TTL has
// passed since its last acknowledged renewal; after a leader change the new
// leader gives every lease its full TTL again, so a lease whose holder died
// may outlive it by up to one more TTL (plus the election time).
func (c *Client) Grant(ctx context.Context, ttl time.Duration, opts ...GrantOption) (*LeaseGrantResult, error) {
	var gc grantConfig
	for _, o := range opts {
		if o != nil {
			o(&gc)
		}
	}
	if ttl <= 0 || ttl > MaxLeaseTTL {
		return nil, newError(CodeInvalidArgument, fmt.Sprintf("lease ttl must be in (0, %v], got %v", MaxLeaseTTL, ttl), nil)
	}
	var out *LeaseGrantResult
	err := c.write(ctx, func(ctx context.Context, cn *conn, wid *enginev1.WriteId) error {
		resp, err := cn.lease.LeaseGrant(ctx, &enginev1.LeaseGrantRequest{TtlMs: ttlMillis(ttl), Id: uint64(gc.id), WriteId: wid})
		if err != nil {
			return err
		}
		out = &LeaseGrantResult{
			ID:       LeaseID(resp.GetId()),
			TTL:      time.Duration(resp.GetTtlMs()) * time.Millisecond,
			Revision: resp.GetRevision(),
		}
		return nil
	})
	return out, err
}

// Revoke ends the lease now and deletes every key attached to it, in one
// replicated step. ErrLeaseNotFound if the lease does not exist (any more).
func (c *Client) Revoke(ctx context.Context, id LeaseID) (*LeaseRevokeResult, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	var out *LeaseRevokeResult
	err := c.write(ctx, func(ctx context.Context, cn *conn, wid *enginev1.WriteId) error {
		resp, err := cn.lease.LeaseRevoke(ctx, &enginev1.LeaseRevokeRequest{Id: uint64(id), WriteId: wid})
		if err != nil {
			return err
		}
		out = &LeaseRevokeResult{Deleted: resp.GetDeleted(), Revision: resp.GetRevision()}
		return nil
	})
	return out, err
}

// Renew restarts the lease's TTL once (a single keepalive) and returns the
// TTL: the lease now lives at least that long. ErrLeaseNotFound if it has
// expired or was revoked. KeepAlive does this in the background.
func (c *Client) Renew(ctx context.Context, id LeaseID) (time.Duration, error) {
	if err := checkLeaseID(id); err != nil {
		return 0, err
	}
	var ttl time.Duration
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := cn.lease.LeaseRenew(ctx, &enginev1.LeaseKeepAliveRequest{Id: uint64(id)})
		if err != nil {
			return err
		}
		ttl = time.Duration(resp.GetTtlMs()) * time.Millisecond
		return nil
	})
	return ttl, err
}

// TimeToLive describes a lease: its granted TTL, the time it has left and,
// withKeys, the keys attached to it. ErrLeaseNotFound if it does not exist.
func (c *Client) TimeToLive(ctx context.Context, id LeaseID, withKeys bool) (*LeaseTimeToLiveResult, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	var out *LeaseTimeToLiveResult
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := cn.lease.LeaseTimeToLive(ctx, &enginev1.LeaseTimeToLiveRequest{Id: uint64(id), Keys: withKeys})
		if err != nil {
			return err
		}
		out = &LeaseTimeToLiveResult{
			ID:         LeaseID(resp.GetId()),
			GrantedTTL: time.Duration(resp.GetGrantedTtlMs()) * time.Millisecond,
			Remaining:  time.Duration(resp.GetRemainingMs()) * time.Millisecond,
			Keys:       resp.GetKeys(),
			KeyCount:   resp.GetKeyCount(),
		}
		return nil
	})
	return out, err
}

// Leases lists the live leases.
func (c *Client) Leases(ctx context.Context) ([]LeaseStatus, error) {
	var out []LeaseStatus
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := cn.lease.LeaseList(ctx, &enginev1.LeaseListRequest{})
		if err != nil {
			return err
		}
		out = make([]LeaseStatus, 0, len(resp.GetLeases()))
		for _, l := range resp.GetLeases() {
			out = append(out, LeaseStatus{ID: LeaseID(l.GetId()), GrantedTTL: time.Duration(l.GetGrantedTtlMs()) * time.Millisecond})
		}
		return nil
	})
	return out, err
}

// LeaseKeepAlive keeps a lease alive in the background; see KeepAlive.
type LeaseKeepAlive struct {
	c    *Client
	ctx  context.Context
	id   LeaseID
	done chan struct{}

	mu       sync.Mutex
	ttl      time.Duration
	deadline time.Time // the lease lives at least until then
	err      error
}

// ID is the lease kept alive.
func (k *LeaseKeepAlive) ID() LeaseID { return k.id }

// TTL is the TTL the server reported with the last renewal.
func (k *LeaseKeepAlive) TTL() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ttl
}

// Deadline is the time until which the lease is known to live: the sending
// time of the last acknowledged renewal plus the TTL. Work protected by the
// lease (a lock, a leadership) should stop by then if Done is closed.
func (k *LeaseKeepAlive) Deadline() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.deadline
}

// Done is closed when the keepalive stops: the caller cancelled the context
// given to KeepAlive (Err is nil), or the lease is lost (Err says why).
func (k *LeaseKeepAlive) Done() <-chan struct{} { return k.done }

// Err is nil while the keepalive runs and after the caller cancelled it.
// Once Done is closed for any other reason it tells why the lease is lost:
// ErrLeaseNotFound (revoked or expired on the server), ErrLeaseExpired (no
// renewal acknowledged within the TTL), ErrClosed (the Client was closed), or
// a non-retryable error such as ErrPermissionDenied.
func (k *LeaseKeepAlive) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// KeepAlive renews the lease in the background, every third of its TTL,
// over a LeaseKeepAlive stream to the leader (re-opened on the new leader
// after a leader change or a broken connection), until ctx is cancelled or
// the lease is lost. It returns after the first renewal, so an unknown,
// revoked or expired lease fails at once with ErrLeaseNotFound.
//
// The lease is lost, and Done is closed with Err set, when the server says
// it is gone (ErrLeaseNotFound) or when no renewal was acknowledged before
// the TTL counted from the last acknowledged one ran out (ErrLeaseExpired:
// the server may still hold the lease, but nothing guarantees it any more).
//
//	ka, err := c.KeepAlive(ctx, lease.ID)
//	if err != nil {
//		return err
//	}
//	select {
//	case <-ka.Done():
//		if err := ka.Err(); err != nil {
//			log.Printf("lease lost: %v", err) // its keys are (or will be) gone
//		}
//	case <-work:
//	}
//
// Cancelling ctx stops the renewals without revoking the lease (it then
// expires after its TTL); call Revoke to end it at once.
func (c *Client) KeepAlive(ctx context.Context, id LeaseID) (*LeaseKeepAlive, error) {
	if err := checkLeaseID(id); err != nil {
		return nil, err
	}
	k := &LeaseKeepAlive{c: c, ctx: ctx, id: id, done: make(chan struct{})}
	ready := make(chan error, 1)
	go k.run(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return k, nil
}

// kaStream is one open LeaseKeepAlive stream.
type kaStream struct {
	addr   string
	stream enginev1.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

// renew sends one renewal and waits (at most timeout) for its answer.
func (k *LeaseKeepAlive) renew(st *kaStream, timeout time.Duration) (*enginev1.LeaseKeepAliveResponse, error) {
	fired := make(chan struct{})
	watchdog := time.AfterFunc(timeout, func() { close(fired); st.cancel() })
	err := st.stream.Send(&enginev1.LeaseKeepAliveRequest{Id: uint64(k.id)})
	var resp *enginev1.LeaseKeepAliveResponse
	if err == nil || errors.Is(err, io.EOF) {
		// On io.EOF from Send the stream has ended: Recv returns its status.
		resp, err = st.stream.Recv()
	}
	if !watchdog.Stop() {
		<-fired
		return nil, &Error{Code: CodeTimeout, Message: fmt.Sprintf("lease renewal not answered within %v", timeout), Endpoint: st.addr}
	}
	if errors.Is(err, io.EOF) {
		return nil, &Error{Code: CodeUnavailable, Message: "lease keepalive stream closed by the server", Endpoint: st.addr, cause: err}
	}
	if err != nil {
		return nil, err
	}
	if got := LeaseID(resp.GetId()); got != k.id {
		return nil, &Error{Code: CodeInternal, Message: fmt.Sprintf("keepalive answer for lease %d, sent lease %d", got, k.id), Endpoint: st.addr}
	}
	return resp, nil
}

// run is the keepalive loop. Before the first acknowledged renewal it
// retries under the client's retry policy and reports the outcome on ready;
// afterwards it retries until the lease's deadline.
func (k *LeaseKeepAlive) run(ready chan<- error) {
	defer close(k.done)
	c := k.c
	pol := c.cfg.retry
	first := true
	var st *kaStream
	closeStream := func() {
		if st != nil {
			st.cancel()
			st = nil
		}
	}
	defer closeStream()
	// end stops the loop: before the first renewal err goes to KeepAlive's
	// caller, afterwards it is the lease's loss (nil: stopped by the caller).
	end := func(err error) {
		if first {
			ready <- err
			return
		}
		k.mu.Lock()
		k.err = err
		k.mu.Unlock()
	}
	var last *Error
	failures, redirects := 0, 0
	for {
		if k.ctx.Err() != nil {
			if first {
				end(ctxError(k.ctx, failures, last))
			} else {
				end(nil)
			}
			return
		}
		if isClosed(c) {
			end(newError(CodeClosed, "client closed", nil))
			return
		}
		var err error
		sent := time.Now()
		if st == nil {
			st, err = k.open()
		}
		var resp *enginev1.LeaseKeepAliveResponse
		if err == nil {
			timeout := c.cfg.requestTimeout
			if !first {
				timeout = min(timeout, time.Until(k.Deadline()))
			}
			if timeout <= 0 {
				err = &Error{Code: CodeTimeout, Message: "no time left to renew"}
			} else {
				resp, err = k.renew(st, timeout)
			}
		}
		if err == nil {
			ttl := time.Duration(resp.GetTtlMs()) * time.Millisecond
			k.mu.Lock()
			if ttl > 0 {
				k.ttl = ttl
			}
			ttl = k.ttl
			k.deadline = sent.Add(ttl)
			k.mu.Unlock()
			if ttl <= 0 {
				closeStream()
				end(&Error{Code: CodeInternal, Message: "the server reported no TTL for the lease"})
				return
			}
			c.mu.Lock()
			if c.leader == "" {
				c.leader = st.addr
			}
			c.mu.Unlock()
			if first {
				first = false
				ready <- nil
			}
			failures, redirects, last = 0, 0, nil
			// A cancelled ctx or a closed client ends the sleep early and is
			// handled at the top of the loop.
			k.sleep(time.Until(sent.Add(max(ttl/3, time.Millisecond))))
			continue
		}
		// The renewal failed.
		var addr string
		if st != nil {
			addr = st.addr
		}
		closeStream()
		e := FromStatus(err)
		if e.Endpoint == "" {
			e.Endpoint = addr
		}
		if k.ctx.Err() != nil || isClosed(c) {
			continue // reported at the top of the loop
		}
		last = e
		if !e.Code.retryable() {
			end(e)
			return
		}
		immediate := false
		if e.Code == CodeNotLeader && e.notLeader != nil && e.notLeader.LeaderAddr != "" {
			if a := c.setLeader(e.notLeader.LeaderAddr); a != "" && a != e.Endpoint {
				immediate = redirects == 0
				redirects++
			}
		} else {
			redirects = 0
			if e.Code != CodeOverloaded && e.Code != CodeChangeInProgress && e.Endpoint != "" {
				c.markFailed(e.Endpoint)
			}
		}
		failures++
		if first && failures >= pol.MaxAttempts {
			e.Message = fmt.Sprintf("%s (gave up after %d attempts)", e.Message, failures)
			end(e)
			return
		}
		if !first && !time.Now().Before(k.Deadline()) {
			end(k.expired(e))
			return
		}
		if !immediate {
			wait := backoffDelay(pol, failures-1)
			if !first {
				wait = min(wait, max(time.Until(k.Deadline()), 0))
			}
			k.sleep(wait)
		}
		if !first && !time.Now().Before(k.Deadline()) && k.ctx.Err() == nil && !isClosed(c) {
			end(k.expired(e))
			return
		}
	}
}

// expired is the loss of a lease whose renewals kept failing (last: the last
// failure) until its deadline.
func (k *LeaseKeepAlive) expired(last *Error) *Error {
	return &Error{
		Code:     CodeLeaseExpired,
		Message:  fmt.Sprintf("lease %d: no renewal acknowledged within its TTL (%v); last error: %v", k.id, k.TTL(), last),
		Endpoint: last.Endpoint,
	}
}

// open starts a LeaseKeepAlive stream on the leader (or the next endpoint
// while the leader is unknown).
func (k *LeaseKeepAlive) open() (*kaStream, error) {
	cn, err := k.c.pick(routeLeader)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(k.ctx)
	stream, err := cn.lease.LeaseKeepAlive(sctx)
	if err != nil {
		cancel()
		e := FromStatus(err)
		if e.Endpoint == "" {
			e.Endpoint = cn.addr
		}
		return nil, e
	}
	return &kaStream{addr: cn.addr, stream: stream, cancel: cancel}, nil
}

// sleep waits d; false if ctx ended or the client was closed first.
func (k *LeaseKeepAlive) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-k.ctx.Done():
		return false
	case <-k.c.done:
		return false
	}
}
