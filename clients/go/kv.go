package dengine

import (
	"context"
	"fmt"
	"math"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// About write outcomes: a write that returns nil was applied exactly once.
// A write that returns ErrInvalidArgument (or another non-retryable server
// error) was not applied. A write that returns ErrTimeout, ErrCanceled,
// ErrUnavailable or another error after retries may or may not have been
// applied: retrying it later as a new write is safe only if it is idempotent
// (a Put is; use CompareAndSwap to make a conditional write).

func checkKey(what string, key []byte) error {
	if len(key) == 0 {
		return newError(CodeInvalidArgument, what+" must not be empty", nil)
	}
	return nil
}

// ttlMillis converts a TTL to whole milliseconds, rounding up.
func ttlMillis(ttl time.Duration) uint64 {
	if ttl <= 0 {
		return 0
	}
	return uint64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// Put stores value under key (replacing any value, TTL and lease) and
// returns the revision of the write. It returns once the write is committed
// by a majority and applied on the leader. WithLease attaches the key to a
// lease (see Grant).
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...OpOption) (uint64, error) {
	cfg, err := buildOp("Put", opts, allowPut)
	if err != nil {
		return 0, err
	}
	return c.put(ctx, key, value, 0, cfg.lease)
}

// PutWithTTL is Put with a time to live (> 0, rounded up to whole
// milliseconds); the key disappears after it.
func (c *Client) PutWithTTL(ctx context.Context, key, value []byte, ttl time.Duration) (uint64, error) {
	if ttl <= 0 {
		return 0, newError(CodeInvalidArgument, fmt.Sprintf("ttl must be > 0 (got %v); use Put for a key without expiry", ttl), nil)
	}
	return c.put(ctx, key, value, ttlMillis(ttl), 0)
}

func (c *Client) put(ctx context.Context, key, value []byte, ttlMs uint64, lease LeaseID) (uint64, error) {
	if err := checkKey("key", key); err != nil {
		return 0, err
	}
	var rev uint64
	err := c.write(ctx, func(ctx context.Context, cn *conn, id *enginev1.WriteId) error {
		resp, err := cn.kv.Put(ctx, &enginev1.PutRequest{Key: key, Value: value, TtlMs: ttlMs, Lease: uint64(lease), WriteId: id})
		if err != nil {
			return err
		}
		rev = resp.GetRevision()
		return nil
	})
	return rev, err
}

// Delete removes key. It reports whether the key existed.
func (c *Client) Delete(ctx context.Context, key []byte) (bool, error) {
	if err := checkKey("key", key); err != nil {
		return false, err
	}
	var deleted bool
	err := c.write(ctx, func(ctx context.Context, cn *conn, id *enginev1.WriteId) error {
		resp, err := cn.kv.Delete(ctx, &enginev1.DeleteRequest{Key: key, WriteId: id})
		if err != nil {
			return err
		}
		deleted = resp.GetDeleted()
		return nil
	})
	return deleted, err
}

// CompareAndSwap atomically stores newValue under key if the key's current
// value equals expected.
//
// A nil expected means "the key must not exist" (create-if-absent); to
// require an existing empty value pass a non-nil empty slice ([]byte{}).
// Likewise a nil newValue means "no new value": a successful comparison
// deletes the key (as in the Rust and Python clients, docs/clients.md); to
// store an empty value pass []byte{}. CompareAndDelete says the same more
// plainly.
//
// A failed comparison is not an error: the result has Succeeded false and
// Current set to the key's current state (nil if absent).
func (c *Client) CompareAndSwap(ctx context.Context, key, expected, newValue []byte, opts ...CASOption) (*CASResult, error) {
	var cc casConfig
	for _, o := range opts {
		o(&cc)
	}
	return c.cas(ctx, key, expected, newValue, ttlMillis(cc.ttl))
}

// CompareAndDelete atomically deletes key if its current value equals
// expected (nil expected: succeeds only if the key does not exist, a no-op).
func (c *Client) CompareAndDelete(ctx context.Context, key, expected []byte) (*CASResult, error) {
	return c.cas(ctx, key, expected, nil, 0)
}

func (c *Client) cas(ctx context.Context, key, expected, newValue []byte, ttlMs uint64) (*CASResult, error) {
	if err := checkKey("key", key); err != nil {
		return nil, err
	}
	var out *CASResult
	err := c.write(ctx, func(ctx context.Context, cn *conn, id *enginev1.WriteId) error {
		resp, err := cn.kv.CompareAndSwap(ctx, &enginev1.CompareAndSwapRequest{
			Key:           key,
			ExpectedValue: expected,
			NewValue:      newValue,
			TtlMs:         ttlMs,
			WriteId:       id,
		})
		if err != nil {
			return err
		}
		out = &CASResult{Succeeded: resp.GetSucceeded(), Current: kvFromProto(resp.GetCurrent()), Revision: resp.GetRevision()}
		return nil
	})
	return out, err
}

func readOpts(opts []ReadOption) (readConfig, error) {
	rc := readConfig{consistency: Linearizable}
	for _, o := range opts {
		o(&rc)
	}
	return rc, rc.check()
}

func (rc readConfig) check() error {
	switch rc.consistency {
	case Linearizable, Lease, Eventual:
		return nil
	}
	return newError(CodeInvalidArgument, fmt.Sprintf("unknown consistency %v (use Linearizable, Lease or Eventual)", rc.consistency), nil)
}

func (rc readConfig) proto() enginev1.Consistency {
	switch rc.consistency {
	case Lease:
		return enginev1.Consistency_LEASE
	case Eventual:
		return enginev1.Consistency_EVENTUAL
	}
	return enginev1.Consistency_LINEARIZABLE
}

func (rc readConfig) route() route {
	if rc.consistency == Eventual {
		return routeAny
	}
	return routeLeader
}

// Get returns the key's current value and revisions, or nil if the key does
// not exist. Reads are Linearizable unless WithConsistency says otherwise.
func (c *Client) Get(ctx context.Context, key []byte, opts ...GetOption) (*KeyValue, error) {
	if err := checkKey("key", key); err != nil {
		return nil, err
	}
	rc, err := readOpts(opts)
	if err != nil {
		return nil, err
	}
	var out *KeyValue
	err = c.invoke(ctx, rc.route(), func(ctx context.Context, cn *conn) error {
		resp, err := cn.kv.Get(ctx, &enginev1.GetRequest{Key: key, Consistency: rc.proto()})
		if err != nil {
			return err
		}
		out = kvFromProto(resp.GetKv())
		return nil
	})
	return out, err
}

// GetMulti reads several keys at one revision. The result has one entry per
// key, in order; nil where the key does not exist.
func (c *Client) GetMulti(ctx context.Context, keys [][]byte, opts ...GetOption) ([]*KeyValue, error) {
	for i, k := range keys {
		if err := checkKey(fmt.Sprintf("keys[%d]", i), k); err != nil {
			return nil, err
		}
	}
	rc, err := readOpts(opts)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, nil
	}
	var out []*KeyValue
	err = c.invoke(ctx, rc.route(), func(ctx context.Context, cn *conn) error {
		resp, err := cn.kv.GetMulti(ctx, &enginev1.GetMultiRequest{Keys: keys, Consistency: rc.proto()})
		if err != nil {
			return err
		}
		if len(resp.GetResults()) != len(keys) {
			return newError(CodeInternal, fmt.Sprintf("GetMulti: server returned %d results for %d keys", len(resp.GetResults()), len(keys)), nil)
		}
		out = make([]*KeyValue, len(keys))
		for i, r := range resp.GetResults() {
			out[i] = kvFromProto(r.GetKv())
		}
		return nil
	})
	return out, err
}

// ScanPrefix returns the pairs whose key starts with prefix, in key order:
// all of them for limit 0, else the first limit (More tells whether more
// keys match). An empty prefix scans all keys. It reads the prefix page by
// page with Range, so nothing is dropped silently; for a large prefix prefer
// RangeAll, which does not hold every pair in memory. Revision is the first
// page's (each page is its own point in time, see RangePages).
func (c *Client) ScanPrefix(ctx context.Context, prefix []byte, limit int, opts ...GetOption) (*ScanResult, error) {
	if limit < 0 || int64(limit) > math.MaxUint32 {
		return nil, newError(CodeInvalidArgument, fmt.Sprintf("limit must be in [0, %d], got %d", uint32(math.MaxUint32), limit), nil)
	}
	rc, err := readOpts(opts)
	if err != nil {
		return nil, err
	}
	cfg := &opConfig{mode: rangePrefix, read: rc}
	req, err := cfg.rangeRequest(prefix)
	if err != nil {
		return nil, err
	}
	out := &ScanResult{}
	for first := true; ; first = false {
		if limit > 0 {
			req.Limit = uint32(min(limit-len(out.KVs), MaxRangeLimit))
		}
		page, err := c.rangePage(ctx, req, rc)
		if err != nil {
			return nil, err
		}
		if first {
			out.Revision = page.Revision
		}
		out.KVs = append(out.KVs, page.KVs...)
		if limit > 0 && len(out.KVs) >= limit {
			out.More = len(out.KVs) > limit || page.More
			out.KVs = out.KVs[:limit]
			return out, nil
		}
		if !page.More {
			return out, nil
		}
		req.Key = page.NextKey
	}
}

// Members lists the cluster's members as the answering node knows them.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	err := c.invoke(ctx, routeAny, func(ctx context.Context, cn *conn) error {
		resp, err := cn.cluster.Members(ctx, &enginev1.MembersRequest{})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, m := range resp.GetMembers() {
			role := RoleUnknown
			switch m.GetRole() {
			case enginev1.MemberRole_VOTER:
				role = RoleVoter
			case enginev1.MemberRole_LEARNER:
				role = RoleLearner
			}
			out = append(out, Member{
				ID:         m.GetId(),
				PeerAddr:   m.GetPeerAddr(),
				ClientAddr: m.GetClientAddr(),
				Role:       role,
				IsLeader:   resp.GetLeaderId() != 0 && m.GetId() == resp.GetLeaderId(),
			})
		}
		return nil
	})
	return out, err
}

// Leader returns the current leader. While no leader is known (an election
// is in progress) it retries under the retry policy, then fails with
// ErrNoLeader; so it also serves to wait for a cluster to be ready.
func (c *Client) Leader(ctx context.Context) (LeaderInfo, error) {
	var out LeaderInfo
	err := c.invoke(ctx, routeAny, func(ctx context.Context, cn *conn) error {
		resp, err := cn.cluster.Leader(ctx, &enginev1.LeaderRequest{})
		if err != nil {
			return err
		}
		if resp.GetLeaderId() == 0 {
			return &Error{Code: CodeNoLeader, Message: "the node knows no leader yet", Endpoint: cn.addr}
		}
		out = LeaderInfo{ID: resp.GetLeaderId(), Addr: resp.GetLeaderAddr()}
		if out.Addr != "" && c.setLeader(out.Addr) == "" &&
			resp.GetHeader().GetNodeId() == resp.GetLeaderId() {
			// The leader's address is not usable here (restricted to the
			// endpoints), but the node that answered is the leader.
			c.mu.Lock()
			c.leader, c.leaderHTTPS = cn.addr, false
			c.mu.Unlock()
		}
		return nil
	})
	return out, err
}
