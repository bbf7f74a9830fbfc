package dengine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// ClusterState is the cluster as one node sees it: one value of
// ClusterChanges. Every value is the whole state, so a reader only needs
// the latest one.
type ClusterState struct {
	// Leader is the current leader; ID 0 (and an empty Addr) while an
	// election is in progress.
	Leader LeaderInfo
	// Term is the leader's term.
	Term uint64
	// Members are every voter and learner (IsLeader marks the leader).
	Members []Member
	// LeaderChanged: the leader or term differs from the previous value
	// (always true on the first value).
	LeaderChanged bool
	// MembersChanged: the membership differs from the previous value
	// (always true on the first value).
	MembersChanged bool
	// NodeID is the node whose view this is.
	NodeID uint64
	// Err is set on the last value only, when the stream ended for a reason
	// other than the caller's ctx (see ClusterChanges).
	Err error
}

// ClusterChanges streams leader and membership changes (the
// Cluster.WatchCluster RPC, which any node serves). The first value is the
// current state with both *Changed flags set; each later value differs from
// the one before it (never a repeat), and the leader's term never goes
// backwards.
//
// When the serving node stops, crashes or becomes unreachable, the stream
// is re-opened on the next endpoint (in the order given to the client);
// because every value is the whole state, nothing is lost. The channel is
// closed when:
//   - the caller cancels ctx: without an error value;
//   - no endpoint serves the stream for MaxAttempts rounds of the retry
//     policy, the credentials are refused, or the Client is closed: the
//     last value has Err set.
//
// ClusterChanges returns once a node has sent the current state; it fails
// if none does (within the same retries).
func (c *Client) ClusterChanges(ctx context.Context) (<-chan ClusterState, error) {
	w := &clusterWatcher{c: c, ctx: ctx, out: make(chan ClusterState, 4)}
	st, err := w.connect(-1)
	if err != nil {
		return nil, err
	}
	go w.run(st)
	return w.out, nil
}

type clusterWatcher struct {
	c    *Client
	ctx  context.Context
	out  chan ClusterState
	last *ClusterState
}

// clusterStream is an open WatchCluster stream on endpoint idx.
type clusterStream struct {
	idx    int
	addr   string
	stream enginev1.Cluster_WatchClusterClient
	cancel context.CancelFunc
	first  *enginev1.ClusterEvent
}

func clusterFinal(code Code) bool {
	switch code {
	case CodeUnauthenticated, CodePermissionDenied, CodeCanceled, CodeClosed:
		return true
	}
	return false
}

// openOn opens the stream on endpoint i and waits (up to the request
// timeout) for its first message.
func (w *clusterWatcher) openOn(i int) (*clusterStream, error) {
	ep := w.c.endpoints[i]
	cn, err := w.c.dial(ep.addr, ep.tls)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(w.ctx)
	timer := time.AfterFunc(w.c.cfg.requestTimeout, cancel)
	stream, err := cn.cluster.WatchCluster(sctx, &enginev1.WatchClusterRequest{})
	var first *enginev1.ClusterEvent
	if err == nil {
		first, err = stream.Recv()
	}
	if !timer.Stop() && err != nil && w.ctx.Err() == nil {
		cancel()
		return nil, &Error{Code: CodeTimeout, Endpoint: ep.addr,
			Message: fmt.Sprintf("no cluster state within %v", w.c.cfg.requestTimeout)}
	}
	if err != nil {
		cancel()
		return nil, withEndpoint(FromStatus(err), ep.addr)
	}
	return &clusterStream{idx: i, addr: ep.addr, stream: stream, cancel: cancel, first: first}, nil
}

// connect tries every endpoint in order, starting after index after, for up
// to MaxAttempts rounds with the retry policy's backoff between rounds.
func (w *clusterWatcher) connect(after int) (*clusterStream, error) {
	n := len(w.c.endpoints)
	rounds := max(w.c.cfg.retry.MaxAttempts, 1)
	var failures []string
	for round := 0; round < rounds; round++ {
		if round > 0 {
			t := time.NewTimer(backoffDelay(w.c.cfg.retry, round-1))
			select {
			case <-t.C:
			case <-w.ctx.Done():
				t.Stop()
				return nil, ctxError(w.ctx, round*n, nil)
			case <-w.c.done:
				t.Stop()
				return nil, newError(CodeClosed, "client closed", nil)
			}
		}
		for k := 0; k < n; k++ {
			st, err := w.openOn((after + 1 + k) % n)
			if err == nil {
				return st, nil
			}
			e := FromStatus(err)
			if w.ctx.Err() != nil {
				return nil, ctxError(w.ctx, round*n+k+1, e)
			}
			if isClosed(w.c) {
				return nil, newError(CodeClosed, "client closed", err)
			}
			if clusterFinal(e.Code) {
				return nil, e
			}
			failures = append(failures, e.Error())
		}
	}
	if len(failures) > n {
		failures = failures[len(failures)-n:]
	}
	return nil, &Error{Code: CodeUnavailable, Message: fmt.Sprintf(
		"cluster watch: no endpoint served it in %d round(s): %s", rounds, strings.Join(failures, "; "))}
}

// run delivers values until the caller goes away or no node serves the
// stream any more.
func (w *clusterWatcher) run(st *clusterStream) {
	defer close(w.out)
	for {
		ev := st.first
		st.first = nil
		var err error
		for err == nil {
			if ev != nil {
				if s, ok := w.observe(ev); ok {
					select {
					case w.out <- s:
					case <-w.ctx.Done():
						st.cancel()
						return
					}
				}
			}
			ev, err = st.stream.Recv()
		}
		st.cancel()
		if w.ctx.Err() != nil {
			return
		}
		if isClosed(w.c) {
			w.final(newError(CodeClosed, "client closed", err))
			return
		}
		if e := FromStatus(err); e.Code == CodeUnauthenticated || e.Code == CodePermissionDenied {
			w.final(withEndpoint(e, st.addr))
			return
		}
		// The node stopped (SHUTTING_DOWN), crashed or is unreachable: go on
		// with the next endpoint.
		next, cerr := w.connect(st.idx)
		if cerr != nil {
			if w.ctx.Err() == nil {
				w.final(cerr)
			}
			return
		}
		st = next
	}
}

func (w *clusterWatcher) final(err error) {
	select {
	case w.out <- ClusterState{Err: err}:
	case <-w.ctx.Done():
	}
}

// observe turns an event into the next value, or ok=false when it brings
// nothing new (the same as the last value, or a leader from an older term).
func (w *clusterWatcher) observe(ev *enginev1.ClusterEvent) (ClusterState, bool) {
	s := ClusterState{
		Leader:         LeaderInfo{ID: ev.GetLeaderId(), Addr: ev.GetLeaderAddr()},
		Term:           ev.GetTerm(),
		Members:        membersFromProto(ev.GetMembers(), ev.GetLeaderId()),
		LeaderChanged:  true,
		MembersChanged: true,
		NodeID:         ev.GetHeader().GetNodeId(),
	}
	if p := w.last; p != nil {
		if s.Term < p.Term {
			// A node with an older view (e.g. one that has not heard of the
			// last election yet): keep the newer leader.
			s.Leader, s.Term = p.Leader, p.Term
			s.Members = membersFromProto(ev.GetMembers(), s.Leader.ID)
		}
		s.LeaderChanged = s.Leader != p.Leader || s.Term != p.Term
		s.MembersChanged = !sameMembers(s.Members, p.Members)
		if !s.LeaderChanged && !s.MembersChanged {
			return ClusterState{}, false
		}
	}
	w.last = &s
	return s, true
}

// sameMembers compares memberships (not Member.IsLeader, which follows the
// leader).
func sameMembers(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool {
		return x.ID == y.ID && x.PeerAddr == y.PeerAddr && x.ClientAddr == y.ClientAddr && x.Role == y.Role
	})
}
