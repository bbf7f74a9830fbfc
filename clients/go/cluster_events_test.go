package dengine

import (
	"testing"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

func clusterEvent(node, leader, term uint64, ids ...uint64) *enginev1.ClusterEvent {
	ev := &enginev1.ClusterEvent{
		Header:   &enginev1.ResponseHeader{NodeId: node},
		LeaderId: leader, Term: term,
		LeaderChanged: true, MembersChanged: true,
	}
	if leader != 0 {
		ev.LeaderAddr = "127.0.0.1:1"
	}
	for _, id := range ids {
		ev.Members = append(ev.Members, &enginev1.Member{Id: id, Role: enginev1.MemberRole_VOTER})
	}
	return ev
}

// The values of ClusterChanges follow the contract whatever the server's
// flags say: first value with both flags, no repeats (e.g. the first state
// of a node reconnected to), flags computed against the last value, and a
// leader from an older term never replaces a newer one.
func TestClusterStateTracking(t *testing.T) {
	w := &clusterWatcher{}
	s, ok := w.observe(clusterEvent(1, 1, 5, 1, 2, 3))
	if !ok || !s.LeaderChanged || !s.MembersChanged || s.Leader.ID != 1 || s.NodeID != 1 || !s.Members[0].IsLeader {
		t.Fatalf("first: %+v %v", s, ok)
	}
	if s, ok := w.observe(clusterEvent(2, 1, 5, 1, 2, 3)); ok {
		t.Fatalf("the same state from another node was delivered: %+v", s)
	}
	if s, ok := w.observe(clusterEvent(2, 1, 4, 1, 2, 3)); ok {
		t.Fatalf("an older term's view was delivered: %+v", s)
	}
	s, ok = w.observe(clusterEvent(2, 1, 4, 1, 2, 3, 4))
	if !ok || s.LeaderChanged || !s.MembersChanged || s.Term != 5 || s.Leader.ID != 1 || len(s.Members) != 4 {
		t.Fatalf("members from an older view: %+v %v", s, ok)
	}
	s, ok = w.observe(clusterEvent(2, 0, 6, 1, 2, 3, 4))
	if !ok || !s.LeaderChanged || s.MembersChanged || s.Leader.ID != 0 || s.Term != 6 {
		t.Fatalf("election: %+v %v", s, ok)
	}
}
