package dengine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// Leadership is a won election; see Client.Campaign.
type Leadership struct {
	c    *Client
	name []byte
	key  []byte
	rev  uint64
	sess *coordSession

	resignOnce sync.Once
	resignErr  error
}

// Campaign runs for leader of the election name, publishing value once
// elected. It waits (until ctx ends) for the candidates queued before it, in
// the order they campaigned. Like Lock, the candidacy lives on a lease:
// granted with DefaultSessionTTL (WithSessionTTL) and kept alive until
// Resign, or the caller's (WithSessionLease). If the leader's process dies,
// its lease expires and the next candidate is elected.
//
// The campaign runs on the server (the Campaign RPC, on the leader); a
// leader change or broken connection while waiting is retried with the same
// lease, keeping the place in the queue. If ctx ends first, the candidacy is
// withdrawn (and a granted lease revoked).
//
//	ld, err := c.Campaign(ctx, "scheduler", []byte("10.0.0.1:8080"))
//	if err != nil {
//		return err
//	}
//	defer ld.Resign(context.Background())
//	select {
//	case <-ld.Lost(): // deposed: stop acting as leader
//	case <-work:
//	}
func (c *Client) Campaign(ctx context.Context, name string, value []byte, opts ...SessionOption) (*Leadership, error) {
	if err := checkName("election", name); err != nil {
		return nil, err
	}
	s, err := c.newSession(ctx, opts)
	if err != nil {
		return nil, err
	}
	req := &enginev1.CampaignRequest{Name: []byte(name), Lease: uint64(s.lease), Value: value}
	var resp *enginev1.CampaignResponse
	err = c.queueWait(ctx, s, func(ctx context.Context, cn *conn) error {
		r, err := enginev1.NewElectionClient(cn.cc).Campaign(ctx, req)
		if err == nil {
			resp = r
		}
		return err
	})
	if err != nil {
		// Withdraw the candidacy: delete our queue key (Unlock deletes any
		// `name/<lease>` key, whatever its revision).
		s.abandon(req.Name, c.unlockKey)
		return nil, err
	}
	lk := resp.GetLeader()
	return &Leadership{c: c, name: req.Name, key: lk.GetKey(), rev: lk.GetRevision(), sess: s}, nil
}

func (l *Leadership) leaderKey() *enginev1.LeaderKey {
	return &enginev1.LeaderKey{Name: l.name, Key: l.key, Revision: l.rev, Lease: uint64(l.sess.lease)}
}

// Name is the election's name.
func (l *Leadership) Name() string { return string(l.name) }

// Key is the leader's key (`name/<lease id in hex>`).
func (l *Leadership) Key() []byte { return l.key }

// Revision is the fencing token of this leadership (the create revision of
// Key); every later leader gets a larger one.
func (l *Leadership) Revision() uint64 { return l.rev }

// Lease is the lease the leadership lives on.
func (l *Leadership) Lease() LeaseID { return l.sess.lease }

// Lost is closed when this leadership ends: its lease was lost (Err says
// why) or Resign was called. With WithSessionLease only Resign closes it.
func (l *Leadership) Lost() <-chan struct{} { return l.sess.lost }

// Err is nil while leading; after Lost is closed, the reason
// (ErrLeaseNotFound / ErrLeaseExpired, ErrClosed, or ErrNotHeld after Resign).
func (l *Leadership) Err() error { return l.sess.error() }

// Proclaim publishes a new value as the leader without a new election.
// ErrNotHeld if this leadership is over.
func (l *Leadership) Proclaim(ctx context.Context, value []byte) error {
	return l.c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		_, err := enginev1.NewElectionClient(cn.cc).Proclaim(ctx, &enginev1.ProclaimRequest{Leader: l.leaderKey(), Value: value})
		return err
	})
}

// Resign gives up the leadership (the next candidate is elected) and
// revokes the lease Campaign granted. A leadership already lost is not an
// error. Safe to call more than once.
func (l *Leadership) Resign(ctx context.Context) error {
	l.resignOnce.Do(func() {
		err := l.c.resign(ctx, l.leaderKey())
		if errors.Is(err, ErrNotHeld) {
			err = nil
		}
		if rerr := l.sess.revoke(); rerr != nil && err == nil {
			err = rerr
		}
		l.sess.end(newError(CodeNotHeld, "resigned", nil))
		l.resignErr = err
	})
	return l.resignErr
}

func (c *Client) resign(ctx context.Context, lk *enginev1.LeaderKey) error {
	return c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		_, err := enginev1.NewElectionClient(cn.cc).Resign(ctx, &enginev1.ResignRequest{Leader: lk})
		return err
	})
}

// ElectionLeader returns the current leader of the election name (its key,
// value and revisions; Lease is the leader's lease), or nil if it has none.
func (c *Client) ElectionLeader(ctx context.Context, name string) (*KeyValue, error) {
	if err := checkName("election", name); err != nil {
		return nil, err
	}
	var out *KeyValue
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := enginev1.NewElectionClient(cn.cc).Leader(ctx, &enginev1.ElectionLeaderRequest{Name: []byte(name)})
		if err != nil {
			return err
		}
		out = kvFromProto(resp.GetKv())
		return nil
	})
	return out, err
}

// LeaderEvent is one value of Observe: the election's leader (its key and
// the value it published), or Err as the last value of a failed observation.
type LeaderEvent struct {
	Leader *KeyValue
	Err    error
}

// Observe streams the leader of the election name: first the current one
// (nothing until there is one), then each new leader or new proclaimed value,
// in order. The stream is re-opened after a leader change or a broken
// connection; a leader already delivered is not delivered again.
//
// The channel is closed when ctx is cancelled (without an error value), or
// after a final LeaderEvent with Err set when the observation fails (the
// cluster stays unreachable past the retry policy, a non-retryable error,
// the Client is closed). Read it promptly.
func (c *Client) Observe(ctx context.Context, name string) (<-chan LeaderEvent, error) {
	if err := checkName("election", name); err != nil {
		return nil, err
	}
	o := &observer{c: c, ctx: ctx, name: []byte(name)}
	st, err := o.open()
	if err != nil {
		return nil, err
	}
	out := make(chan LeaderEvent, defaultWatchBuffer)
	go o.run(st, out)
	return out, nil
}

type observer struct {
	c    *Client
	ctx  context.Context
	name []byte
	last *KeyValue // last delivered leader
}

type observeStream struct {
	addr   string
	stream enginev1.Election_ObserveClient
	cancel context.CancelFunc
}

// open starts an Observe stream on the leader, with the client's retries.
// The server sends nothing until there is a leader, so open returns once
// the stream is established (its response headers arrived).
func (o *observer) open() (*observeStream, error) {
	var res *observeStream
	err := o.c.invoke(o.ctx, routeLeader, func(actx context.Context, cn *conn) error {
		sctx, scancel := context.WithCancel(o.ctx)
		stream, err := enginev1.NewElectionClient(cn.cc).Observe(sctx, &enginev1.ElectionLeaderRequest{Name: o.name})
		if err == nil {
			// Wait for the response headers: an accepted stream sends them
			// at once; a refused one (NOT_LEADER, ...) ends without them and
			// Recv returns its status.
			var md metadata.MD
			md, err = stream.Header()
			if err == nil && md == nil {
				_, err = stream.Recv()
				if err == nil {
					err = newError(CodeInternal, "observe stream sent a message without headers", nil)
				}
			}
		}
		if err != nil {
			scancel()
			return err
		}
		res = &observeStream{addr: cn.addr, stream: stream, cancel: scancel}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (o *observer) run(st *observeStream, out chan<- LeaderEvent) {
	defer close(out)
	defer func() {
		if st != nil {
			st.cancel()
		}
	}()
	send := func(ev LeaderEvent) bool {
		select {
		case out <- ev:
			return true
		case <-o.ctx.Done():
			return false
		}
	}
	reopens := 0
	for {
		resp, err := st.stream.Recv()
		if err == nil {
			kv := kvFromProto(resp.GetKv())
			if kv == nil || o.same(kv) {
				continue
			}
			o.last = kv
			reopens = 0
			if !send(LeaderEvent{Leader: kv}) {
				return
			}
			continue
		}
		st.cancel()
		addr := st.addr
		st = nil
		if o.ctx.Err() != nil {
			return
		}
		if isClosed(o.c) {
			send(LeaderEvent{Err: newError(CodeClosed, "client closed", nil)})
			return
		}
		e := FromStatus(err)
		if errors.Is(err, io.EOF) {
			e = newError(CodeUnavailable, "observe stream closed by the server", err)
		}
		if e.Endpoint == "" {
			e.Endpoint = addr
		}
		if !e.Code.retryable() {
			send(LeaderEvent{Err: e})
			return
		}
		if e.Code == CodeNotLeader && e.notLeader != nil && e.notLeader.LeaderAddr != "" {
			o.c.setLeader(e.notLeader.LeaderAddr)
		} else if e.Endpoint != "" {
			o.c.markFailed(e.Endpoint)
		}
		// Back off, then re-open (invoke retries under the policy, on the
		// leader).
		reopens++
		t := time.NewTimer(backoffDelay(o.c.cfg.retry, min(reopens-1, 16)))
		select {
		case <-t.C:
		case <-o.ctx.Done():
			t.Stop()
			return
		}
		st, err = o.open()
		if err != nil {
			if o.ctx.Err() != nil {
				return
			}
			send(LeaderEvent{Err: err})
			return
		}
	}
}

// same reports whether kv is the leader (and value) delivered last.
func (o *observer) same(kv *KeyValue) bool {
	l := o.last
	return l != nil && bytes.Equal(l.Key, kv.Key) && l.CreateRevision == kv.CreateRevision &&
		l.ModRevision == kv.ModRevision
}
