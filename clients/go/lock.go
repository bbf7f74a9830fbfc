package dengine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// DefaultSessionTTL is the TTL of the lease Lock and Campaign grant when the
// caller gives none (WithSessionTTL / WithSessionLease): a holder that dies
// loses the lock (or leadership) at most about this long after its last
// renewal.
const DefaultSessionTTL = 10 * time.Second

// SessionOption configures the lease behind a Lock or a Campaign.
type SessionOption func(*sessionConfig)

type sessionConfig struct {
	ttl   time.Duration
	lease LeaseID
}

// WithSessionTTL sets the TTL of the lease Lock / Campaign grant and keep
// alive (default DefaultSessionTTL). Ignored with WithSessionLease.
func WithSessionTTL(ttl time.Duration) SessionOption {
	return func(s *sessionConfig) { s.ttl = ttl }
}

// WithSessionLease makes Lock / Campaign use the caller's lease instead of
// granting one: the caller keeps it alive (KeepAlive) and learns of its loss
// from its own LeaseKeepAlive; Unlock / Resign do not revoke it. One lease
// holds at most one place in a given lock's (or election's) queue.
func WithSessionLease(id LeaseID) SessionOption {
	return func(s *sessionConfig) { s.lease = id }
}

// coordSession is the lease a Lock or Leadership lives on.
type coordSession struct {
	c     *Client
	lease LeaseID
	owned bool // granted (and kept alive) by us: revoked at the end

	ka       *LeaseKeepAlive // nil for the caller's lease
	kaCancel context.CancelFunc

	lost    chan struct{} // closed when the lease is lost or the session ended
	mu      sync.Mutex
	err     error
	endOnce sync.Once
}

// newSession grants and keeps alive a lease (or adopts the caller's).
func (c *Client) newSession(ctx context.Context, opts []SessionOption) (*coordSession, error) {
	sc := sessionConfig{ttl: DefaultSessionTTL}
	for _, o := range opts {
		if o != nil {
			o(&sc)
		}
	}
	s := &coordSession{c: c, lease: sc.lease, lost: make(chan struct{})}
	if sc.lease != 0 {
		return s, nil
	}
	g, err := c.Grant(ctx, sc.ttl)
	if err != nil {
		return nil, err
	}
	s.lease, s.owned = g.ID, true
	// The keepalive outlives ctx (which bounds only the acquisition).
	kctx, cancel := context.WithCancel(context.Background())
	ka, err := c.KeepAlive(kctx, g.ID)
	if err != nil {
		cancel()
		s.revoke()
		return nil, err
	}
	s.ka, s.kaCancel = ka, cancel
	go func() {
		<-ka.Done()
		if err := ka.Err(); err != nil {
			s.end(err)
		}
	}()
	return s, nil
}

// end records why the session ended (first call wins) and closes lost.
func (s *coordSession) end(err error) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.lost)
	})
}

func (s *coordSession) error() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// revoke stops the keepalive and revokes an owned lease (a lease already
// gone is fine).
func (s *coordSession) revoke() error {
	if s.kaCancel != nil {
		s.kaCancel()
	}
	if !s.owned {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.c.cfg.requestTimeout)
	defer cancel()
	if _, err := s.c.Revoke(ctx, s.lease); err != nil && !errors.Is(err, ErrLeaseNotFound) {
		return err
	}
	return nil
}

// queueKey is the key a lease holds in a lock's or election's queue
// (`name/<lease id, 16 hex digits>`).
func queueKey(name []byte, lease LeaseID) []byte {
	return fmt.Appendf(append(append([]byte(nil), name...), '/'), "%016x", uint64(lease))
}

// checkName refuses an empty lock / election name.
func checkName(what, name string) error {
	if name == "" {
		return newError(CodeInvalidArgument, what+" name must not be empty", nil)
	}
	return nil
}

// queueWait runs call (a Lock or Campaign RPC, which waits server-side
// until the caller's key is first in the queue) on the leader until it
// succeeds, ctx ends, the session's lease is lost or a non-retryable error
// comes back. Each attempt has a bounded wait so that a hung or deposed
// leader is noticed; retrying with the same lease keeps the queue position
// (the queue key is derived from the lease). NOT_LEADER hints are followed,
// other retryable errors back off under the retry policy, and give up after
// MaxAttempts of them in a row.
func (c *Client) queueWait(ctx context.Context, s *coordSession, call func(ctx context.Context, cn *conn) error) error {
	pol := c.cfg.retry
	attemptTimeout := max(c.cfg.requestTimeout, 5*time.Second)
	// Stop waiting as soon as the lease is lost.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-s.lost:
			cancel()
		case <-stop:
		}
	}()
	var last *Error
	failures, redirects := 0, 0
	immediate := true
	for {
		if !immediate {
			t := time.NewTimer(backoffDelay(pol, failures-1))
			select {
			case <-t.C:
			case <-wctx.Done():
				t.Stop()
			case <-c.done:
				t.Stop()
				return newError(CodeClosed, "client closed", nil)
			}
		}
		immediate = false
		if err := s.error(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctxError(ctx, failures+1, last)
		}
		cn, err := c.pick(routeLeader)
		if err != nil {
			return err
		}
		actx, acancel := context.WithTimeout(wctx, attemptTimeout)
		err = call(actx, cn)
		attemptEnded := actx.Err() != nil
		acancel()
		if err == nil {
			c.mu.Lock()
			if c.leader == "" {
				c.leader = cn.addr
			}
			c.mu.Unlock()
			return nil
		}
		if lerr := s.error(); lerr != nil {
			return lerr
		}
		e := FromStatus(err)
		if e.Endpoint == "" {
			e.Endpoint = cn.addr
		}
		if ctx.Err() != nil {
			return ctxError(ctx, failures+1, e)
		}
		if isClosed(c) {
			return newError(CodeClosed, "client closed", err)
		}
		last = e
		// The attempt's deadline passed: our own, or the server's (tonic
		// answers CANCELLED "Timeout expired" when the grpc-timeout it was
		// sent runs out, a little before the client's deadline fires).
		timedOut := wctx.Err() == nil && (attemptEnded || e.Code == CodeCanceled || e.Code == CodeTimeout)
		if timedOut {
			// Still queued, or the node hangs: ask again at once (on the
			// leader as the cluster sees it now).
			c.markFailed(cn.addr)
			immediate = true
			continue
		}
		if !e.Code.retryable() {
			return e
		}
		failures++
		if failures >= pol.MaxAttempts {
			e.Message = fmt.Sprintf("%s (gave up after %d attempts)", e.Message, failures)
			return e
		}
		if e.Code == CodeNotLeader && e.notLeader != nil && e.notLeader.LeaderAddr != "" {
			if addr := c.setLeader(e.notLeader.LeaderAddr); addr != "" && addr != cn.addr {
				immediate = redirects == 0
				redirects++
				continue
			}
		}
		redirects = 0
		if e.Code != CodeOverloaded && e.Code != CodeChangeInProgress {
			c.markFailed(cn.addr)
		}
	}
}

// abandon cleans up after a failed acquisition: our key (if the server
// queued it) is removed, and an owned lease is revoked (which removes the
// key too).
func (s *coordSession) abandon(name []byte, remove func(ctx context.Context, key []byte) error) {
	if s.owned {
		_ = s.revoke()
		s.end(newError(CodeNotHeld, "acquisition abandoned", nil))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.c.cfg.requestTimeout)
	defer cancel()
	_ = remove(ctx, queueKey(name, s.lease))
	s.end(newError(CodeNotHeld, "acquisition abandoned", nil))
}

// Lock is a held distributed lock; see Client.Lock.
type Lock struct {
	c    *Client
	name []byte
	key  []byte
	rev  uint64
	sess *coordSession

	unlockOnce sync.Once
	unlockErr  error
}

// Lock acquires the distributed lock name, waiting (until ctx ends) for the
// holders and waiters queued before it. The lock lives on a lease: by
// default Lock grants one with a TTL of DefaultSessionTTL (WithSessionTTL)
// and keeps it alive in the background until Unlock; WithSessionLease uses
// the caller's lease instead. If the process dies, its lease expires and the
// next waiter gets the lock — in queue order.
//
// The lock is taken on the server (the Lock RPC, on the leader): a leader
// change or a broken connection while waiting is retried with the same
// lease, which keeps the place in the queue. If ctx ends or acquisition
// fails, the place in the queue is given up (and a granted lease revoked).
//
// Revision is the fencing token: it grows with every new holder, so a
// resource that records the highest token it has seen can refuse a stale
// holder (one whose lease expired while it was paused, say). Lost is closed
// if the lease is lost while the lock is held; stop touching the protected
// resource then.
//
//	l, err := c.Lock(ctx, "jobs/nightly")
//	if err != nil {
//		return err
//	}
//	defer l.Unlock(context.Background())
//	doWork(l.Revision())
//
// WithLock wraps this pattern. Errors: ErrInvalidArgument (empty name),
// ErrLeaseNotFound (the lease is gone), ErrLeaseExpired (keepalive lost),
// ErrTimeout/ErrCanceled (ctx ended while waiting).
func (c *Client) Lock(ctx context.Context, name string, opts ...SessionOption) (*Lock, error) {
	if err := checkName("lock", name); err != nil {
		return nil, err
	}
	s, err := c.newSession(ctx, opts)
	if err != nil {
		return nil, err
	}
	req := &enginev1.LockRequest{Name: []byte(name), Lease: uint64(s.lease)}
	var resp *enginev1.LockResponse
	err = c.queueWait(ctx, s, func(ctx context.Context, cn *conn) error {
		r, err := enginev1.NewLockClient(cn.cc).Lock(ctx, req)
		if err == nil {
			resp = r
		}
		return err
	})
	if err != nil {
		s.abandon(req.Name, c.unlockKey)
		return nil, err
	}
	return &Lock{c: c, name: req.Name, key: resp.GetKey(), rev: resp.GetRevision(), sess: s}, nil
}

// unlockKey deletes a lock key (the Unlock RPC; a key already gone is fine).
func (c *Client) unlockKey(ctx context.Context, key []byte) error {
	return c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		_, err := enginev1.NewLockClient(cn.cc).Unlock(ctx, &enginev1.UnlockRequest{Key: key})
		return err
	})
}

// Name is the lock's name.
func (l *Lock) Name() string { return string(l.name) }

// Key is the key that holds the lock (`name/<lease id in hex>`).
func (l *Lock) Key() []byte { return l.key }

// Revision is the fencing token: the create revision of Key. Every later
// holder of the lock gets a larger one.
func (l *Lock) Revision() uint64 { return l.rev }

// Lease is the lease the lock lives on.
func (l *Lock) Lease() LeaseID { return l.sess.lease }

// Lost is closed when the lock is no longer held by this Lock: its lease was
// lost (Err says why) or Unlock was called. With WithSessionLease the
// client does not watch the caller's lease: only Unlock closes it then.
func (l *Lock) Lost() <-chan struct{} { return l.sess.lost }

// Err is nil while the lock is held. After Lost is closed it is the reason:
// ErrLeaseNotFound / ErrLeaseExpired (the lease was lost: another holder may
// have the lock now), ErrClosed, or ErrNotHeld after Unlock.
func (l *Lock) Err() error { return l.sess.error() }

// Unlock releases the lock (the Unlock RPC; a lock already lost is not an
// error) and then revokes the lease Lock granted. Safe to call more than
// once; later calls return the first call's result.
func (l *Lock) Unlock(ctx context.Context) error {
	l.unlockOnce.Do(func() {
		err := l.c.unlockKey(ctx, l.key)
		if rerr := l.sess.revoke(); rerr != nil && err == nil {
			err = rerr
		}
		l.sess.end(newError(CodeNotHeld, "unlocked", nil))
		l.unlockErr = err
	})
	return l.unlockErr
}

// WithLock runs fn while holding the lock name and releases it afterwards
// (also when fn panics). fn gets the fencing token and a context that is
// cancelled if the lock is lost while fn runs; WithLock then returns the
// loss (ErrLeaseNotFound / ErrLeaseExpired) joined with fn's error.
//
//	err := c.WithLock(ctx, "jobs/nightly", func(ctx context.Context, fencing uint64) error {
//		return runJob(ctx, fencing)
//	}, dengine.WithSessionTTL(5*time.Second))
func (c *Client) WithLock(ctx context.Context, name string, fn func(ctx context.Context, fencing uint64) error, opts ...SessionOption) (err error) {
	l, err := c.Lock(ctx, name, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-l.Lost():
			cancel()
		case <-fctx.Done():
		}
	}()
	defer func() {
		var lost error
		select {
		case <-l.Lost():
			lost = l.Err()
		default:
		}
		cancel()
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 2*c.cfg.requestTimeout)
		defer ucancel()
		uerr := l.Unlock(uctx)
		if lost != nil {
			err = errors.Join(lost, err)
		} else if err == nil {
			err = uerr
		}
	}()
	return fn(fctx, l.rev)
}
