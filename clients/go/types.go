package dengine

import (
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// KeyValue is a stored key with its revisions.
type KeyValue struct {
	Key   []byte
	Value []byte
	// CreateRevision is the revision (log index) that created the key since
	// its last deletion.
	CreateRevision uint64
	// ModRevision is the revision that last modified the key.
	ModRevision uint64
	// Version counts modifications since creation (1 after create).
	Version uint64
	// ExpiresAt is when the key expires; the zero Time means no TTL.
	ExpiresAt time.Time
	// Lease is the lease the key is attached to (0: none); the key is
	// deleted when the lease expires or is revoked.
	Lease LeaseID
}

func kvFromProto(p *enginev1.KeyValue) *KeyValue {
	if p == nil {
		return nil
	}
	kv := &KeyValue{
		Key:            p.GetKey(),
		Value:          p.GetValue(),
		CreateRevision: p.GetCreateRevision(),
		ModRevision:    p.GetModRevision(),
		Version:        p.GetVersion(),
		Lease:          LeaseID(p.GetLease()),
	}
	if ms := p.GetExpiresAtMs(); ms != 0 {
		kv.ExpiresAt = time.UnixMilli(int64(ms))
	}
	return kv
}

// CASResult is the outcome of CompareAndSwap / CompareAndDelete.
type CASResult struct {
	// Succeeded is true if the comparison held and the write was applied.
	Succeeded bool
	// Current is the key after the operation (nil if it does not exist): the
	// new value on success, the value that failed the comparison otherwise.
	Current *KeyValue
	// Revision is the store revision of the operation.
	Revision uint64
}

// ScanResult is a page of ScanPrefix.
type ScanResult struct {
	// KVs are the matching pairs in key order.
	KVs []*KeyValue
	// More is true when more keys match than the limit let through (never
	// with limit 0: ScanPrefix then reads every page).
	More bool
	// Revision is the store revision the result reflects.
	Revision uint64
}

// EventType is the kind of a watch event.
type EventType int

const (
	EventPut    EventType = 1
	EventDelete EventType = 2
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventDelete:
		return "DELETE"
	}
	return "UNKNOWN"
}

// WatchEvent is one value received from a watch channel. It is one of:
//   - a committed change (Err nil, ProgressRevision 0): Type, KV, PrevKV;
//   - a progress notification (IsProgress(); only WithProgressNotify):
//     every change up to ProgressRevision has been delivered;
//   - the final value (Err set) before the channel is closed.
type WatchEvent struct {
	Type EventType
	// KV is the key after the change. For EventDelete, Value is empty and
	// ModRevision is the revision of the deletion.
	KV KeyValue
	// PrevKV is the key before the change (WithPrevKV only; nil when the
	// key did not exist before it, or without the option).
	PrevKV *KeyValue
	// ProgressRevision is set on a progress notification (see
	// WithProgressNotify): the revision the watch has caught up to.
	ProgressRevision uint64
	// Err is non-nil on the final value of a watch that ended for a reason
	// other than the caller cancelling its context. It is an *Error whose
	// ResumeRevision says where to watch from again.
	Err error
}

// Revision is the revision of the change (KV.ModRevision), or for a
// progress notification the revision the watch has caught up to.
func (e WatchEvent) Revision() uint64 {
	if e.ProgressRevision != 0 {
		return e.ProgressRevision
	}
	return e.KV.ModRevision
}

// IsProgress reports whether e is a progress notification (no change).
func (e WatchEvent) IsProgress() bool { return e.ProgressRevision != 0 && e.Err == nil }

// MemberRole is a member's voting role.
type MemberRole int

const (
	RoleUnknown MemberRole = iota
	RoleVoter
	RoleLearner
)

func (r MemberRole) String() string {
	switch r {
	case RoleVoter:
		return "voter"
	case RoleLearner:
		return "learner"
	}
	return "unknown"
}

// Member is one cluster member.
type Member struct {
	ID uint64
	// PeerAddr is the address peers use for Raft traffic.
	PeerAddr string
	// ClientAddr is the address clients use; empty if unknown.
	ClientAddr string
	Role       MemberRole
	// IsLeader is true for the member the answering node believes leads.
	IsLeader bool
}

// LeaderInfo names the current leader.
type LeaderInfo struct {
	ID uint64
	// Addr is the leader's client address.
	Addr string
}
