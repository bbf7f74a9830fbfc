package dengine

import (
	"context"
	"errors"
	"fmt"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// Cluster administration and node status (the dengine.v1.Admin service),
// the same calls as the Rust client's GrpcAdmin.
//
// Membership changes and transfers go to the leader (following NOT_LEADER
// hints). They are retried only after errors that mean the change was not
// executed (NOT_LEADER, NO_LEADER, OVERLOADED, CHANGE_IN_PROGRESS, an
// unreachable node); an attempt that times out is returned as CodeTimeout
// without a retry: its outcome is unknown, so check Members before
// repeating it. AddLearner and Promote are idempotent on the server (a
// repeated call with the same arguments succeeds).

// NodeStatus is one node's view of itself.
type NodeStatus struct {
	ID uint64
	// Role is "leader", "follower", "candidate", "pre_candidate" or "learner".
	Role string
	// LeaderID is 0 if the node knows no leader.
	LeaderID      uint64
	Term          uint64
	CommitIndex   uint64
	AppliedIndex  uint64
	LastLogIndex  uint64
	SnapshotIndex uint64
	Members       []Member
	// Alarms raised on the node, e.g. "NOSPACE" (its stored data reached the
	// storage quota; writes that store data fail with CodeNoSpace).
	Alarms []string
	// DataBytes is the logical size of the stored data (keys + values + 32
	// bytes per key), what the quota counts.
	DataBytes uint64
	// QuotaBytes is the node's storage quota; 0 = none.
	QuotaBytes uint64
	// LogBytes is the payload of the committed log since the latest snapshot.
	LogBytes uint64
}

func roleFromProto(r enginev1.MemberRole) MemberRole {
	switch r {
	case enginev1.MemberRole_VOTER:
		return RoleVoter
	case enginev1.MemberRole_LEARNER:
		return RoleLearner
	}
	return RoleUnknown
}

// membersFromProto converts members; leaderID marks Member.IsLeader.
func membersFromProto(ms []*enginev1.Member, leaderID uint64) []Member {
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{
			ID:         m.GetId(),
			PeerAddr:   m.GetPeerAddr(),
			ClientAddr: m.GetClientAddr(),
			Role:       roleFromProto(m.GetRole()),
			IsLeader:   leaderID != 0 && m.GetId() == leaderID,
		})
	}
	return out
}

// change runs one membership change on the leader (module contract above).
func (c *Client) change(ctx context.Context, op string,
	call func(ctx context.Context, adm enginev1.AdminClient) (*enginev1.ChangeResponse, error)) ([]Member, error) {
	var out []Member
	var timedOut *Error
	// Returned by an attempt that timed out: not retryable, so invoke stops.
	stop := &Error{Code: CodeInternal, Message: "outcome unknown"}
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := call(ctx, enginev1.NewAdminClient(cn.cc))
		if err != nil {
			e := FromStatus(err)
			if e.Code == CodeTimeout && ctx.Err() != nil {
				timedOut = e
				return stop
			}
			return err
		}
		out = membersFromProto(resp.GetMembers(), 0)
		return nil
	})
	if timedOut != nil && errors.Is(err, stop) {
		return nil, &Error{Code: CodeTimeout, Endpoint: timedOut.Endpoint, cause: timedOut,
			Message: fmt.Sprintf("%s: no answer before the request timeout; the change may or may not "+
				"have been applied, check Members before repeating it (%s)", op, timedOut.Message)}
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AddLearner adds node id as a learner (it receives the log but does not
// vote). peerAddr is where peers reach it (host:port, required); clientAddr
// is its client API address (may be empty). Returns the members after the
// change.
func (c *Client) AddLearner(ctx context.Context, id uint64, peerAddr, clientAddr string) ([]Member, error) {
	if id == 0 {
		return nil, newError(CodeInvalidArgument, "id: node id 0 is reserved; use 1 or more", nil)
	}
	if peerAddr == "" {
		return nil, newError(CodeInvalidArgument,
			"peerAddr is empty; give the address peers reach the node at (host:port)", nil)
	}
	req := &enginev1.AddLearnerRequest{Id: id, PeerAddr: peerAddr, ClientAddr: clientAddr}
	return c.change(ctx, "AddLearner", func(ctx context.Context, a enginev1.AdminClient) (*enginev1.ChangeResponse, error) {
		return a.AddLearner(ctx, req)
	})
}

// Promote turns learner id into a voter. Returns the members after the
// change. Promote a learner once it has caught up (compare its
// NodeStatusAt(...).AppliedIndex with the leader's CommitIndex, or use
// PromoteWhenCaughtUp): a voter that is far behind weakens the quorum.
func (c *Client) Promote(ctx context.Context, id uint64) ([]Member, error) {
	return c.promote(ctx, id, false)
}

// PromoteForce turns learner id into a voter even if it has not caught up
// (Promote is refused then). A voter far behind cannot help commit until it
// has caught up, so a forced promote of a lagging learner weakens the
// quorum; prefer PromoteWhenCaughtUp.
func (c *Client) PromoteForce(ctx context.Context, id uint64) ([]Member, error) {
	return c.promote(ctx, id, true)
}

func (c *Client) promote(ctx context.Context, id uint64, force bool) ([]Member, error) {
	req := &enginev1.PromoteRequest{Id: id, Force: force}
	return c.change(ctx, "Promote", func(ctx context.Context, a enginev1.AdminClient) (*enginev1.ChangeResponse, error) {
		return a.Promote(ctx, req)
	})
}

// RemoveMember removes node id (voter or learner). Returns the members
// after the change.
func (c *Client) RemoveMember(ctx context.Context, id uint64) ([]Member, error) {
	req := &enginev1.RemoveMemberRequest{Id: id}
	return c.change(ctx, "RemoveMember", func(ctx context.Context, a enginev1.AdminClient) (*enginev1.ChangeResponse, error) {
		return a.RemoveMember(ctx, req)
	})
}

// TransferLeader asks the leader to hand leadership to voter to; it returns
// once to leads. The client forgets its cached leader so the next request
// finds the new one.
func (c *Client) TransferLeader(ctx context.Context, to uint64) ([]Member, error) {
	req := &enginev1.TransferLeaderRequest{To: to}
	ms, err := c.change(ctx, "TransferLeader", func(ctx context.Context, a enginev1.AdminClient) (*enginev1.ChangeResponse, error) {
		return a.TransferLeader(ctx, req)
	})
	c.mu.Lock()
	c.leader = ""
	c.mu.Unlock()
	return ms, err
}

// TriggerSnapshot snapshots the leader's state machine now (and compacts
// its log); returns the snapshot's index.
func (c *Client) TriggerSnapshot(ctx context.Context) (uint64, error) {
	var idx uint64
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := enginev1.NewAdminClient(cn.cc).TriggerSnapshot(ctx, &enginev1.TriggerSnapshotRequest{})
		if err != nil {
			return err
		}
		idx = resp.GetSnapshotIndex()
		return nil
	})
	return idx, err
}

// TriggerSnapshotAt snapshots the node at addr (host:port; no redirect).
func (c *Client) TriggerSnapshotAt(ctx context.Context, addr string) (uint64, error) {
	cn, err := c.dialAt(addr)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.requestTimeout)
	defer cancel()
	resp, err := enginev1.NewAdminClient(cn.cc).TriggerSnapshot(ctx, &enginev1.TriggerSnapshotRequest{})
	if err != nil {
		return 0, withEndpoint(FromStatus(err), cn.addr)
	}
	return resp.GetSnapshotIndex(), nil
}

// NodeStatus returns the status of the leader (any node if no leader is
// known).
func (c *Client) NodeStatus(ctx context.Context) (NodeStatus, error) {
	var out NodeStatus
	err := c.invoke(ctx, routeLeader, func(ctx context.Context, cn *conn) error {
		resp, err := enginev1.NewAdminClient(cn.cc).NodeStatus(ctx, &enginev1.NodeStatusRequest{})
		if err != nil {
			return err
		}
		out = nodeStatusFromProto(resp)
		return nil
	})
	return out, err
}

// NodeStatusAt returns the status of the node at addr (host:port or an
// endpoint URL; no redirect, no retry), e.g. to check that a learner has
// caught up or to list every member's state.
func (c *Client) NodeStatusAt(ctx context.Context, addr string) (NodeStatus, error) {
	cn, err := c.dialAt(addr)
	if err != nil {
		return NodeStatus{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.requestTimeout)
	defer cancel()
	resp, err := enginev1.NewAdminClient(cn.cc).NodeStatus(ctx, &enginev1.NodeStatusRequest{})
	if err != nil {
		return NodeStatus{}, withEndpoint(FromStatus(err), cn.addr)
	}
	return nodeStatusFromProto(resp), nil
}

func withEndpoint(e *Error, addr string) *Error {
	if e.Endpoint == "" {
		e.Endpoint = addr
	}
	return e
}

// dialAt connects to one node given as host:port or an endpoint URL.
func (c *Client) dialAt(addr string) (*conn, error) {
	ep, err := parseEndpoint(addr)
	if err != nil {
		return nil, newError(CodeInvalidArgument, fmt.Sprintf("addr %q: %v", addr, err), err)
	}
	useTLS := ep.tls
	for _, e := range c.endpoints {
		if e.addr == ep.addr {
			useTLS = e.tls
		}
	}
	return c.dial(ep.addr, useTLS)
}

func nodeStatusFromProto(r *enginev1.NodeStatusResponse) NodeStatus {
	return NodeStatus{
		ID:            r.GetId(),
		Role:          r.GetRole(),
		LeaderID:      r.GetLeaderId(),
		Term:          r.GetHeader().GetTerm(),
		CommitIndex:   r.GetCommitIndex(),
		AppliedIndex:  r.GetAppliedIndex(),
		LastLogIndex:  r.GetLastLogIndex(),
		SnapshotIndex: r.GetSnapshotIndex(),
		Members:       membersFromProto(r.GetMembers(), r.GetLeaderId()),
		Alarms:        r.GetAlarms(),
		DataBytes:     r.GetDataBytes(),
		QuotaBytes:    r.GetQuotaBytes(),
		LogBytes:      r.GetLogBytes(),
	}
}

// PromoteWhenCaughtUp waits until learner id has applied everything the
// leader had committed when the call started, then promotes it. It asks the
// learner at its client address (from Members), polling every 50ms, until
// ctx ends. Use Promote to promote without waiting.
func (c *Client) PromoteWhenCaughtUp(ctx context.Context, id uint64) ([]Member, error) {
	leader, err := c.NodeStatus(ctx)
	if err != nil {
		return nil, err
	}
	var addr string
	for _, m := range leader.Members {
		if m.ID == id {
			if m.Role == RoleVoter {
				return leader.Members, nil
			}
			addr = m.ClientAddr
		}
	}
	if addr == "" {
		return nil, newError(CodeUnknownNode, fmt.Sprintf(
			"node %d is not a learner with a client address in %v; add it with AddLearner first", id, leader.Members), nil)
	}
	for {
		st, err := c.NodeStatusAt(ctx, addr)
		if err == nil && st.AppliedIndex >= leader.CommitIndex {
			return c.Promote(ctx, id)
		}
		select {
		case <-ctx.Done():
			if err == nil {
				return nil, newError(CodeTimeout, fmt.Sprintf("learner %d applied index %d did not reach the "+
					"leader's commit index %d before the context ended", id, st.AppliedIndex, leader.CommitIndex), ctx.Err())
			}
			return nil, ctxError(ctx, 0, FromStatus(err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitReady waits until the cluster has a leader that serves requests: a
// leader is known and it answers a linearizable read (of the key "\x00";
// with auth on, the user needs read access to it). It returns the leader;
// the last error when ctx ends first (give ctx a deadline); or at once an
// error that waiting cannot cure (e.g. CodeUnauthenticated).
func (c *Client) WaitReady(ctx context.Context) (LeaderInfo, error) {
	var last error
	for {
		li, err := c.Leader(ctx)
		if err == nil {
			// A leader that can serve a linearizable read has committed an
			// entry of its term: it serves reads and writes.
			_, err = c.Get(ctx, []byte{0})
			if err == nil {
				return li, nil
			}
		}
		if e := FromStatus(err); !e.Code.retryable() && e.Code != CodeUnavailable {
			return LeaderInfo{}, e
		}
		last = err
		select {
		case <-ctx.Done():
			return LeaderInfo{}, ctxError(ctx, 0, FromStatus(last))
		case <-c.done:
			return LeaderInfo{}, newError(CodeClosed, "client closed", nil)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
