// Package dengine is the Go client for a d-engine cluster (the standalone
// d-engine-server, gRPC API dengine.v1).
//
//	c, err := dengine.NewClient("127.0.0.1:9083", "127.0.0.1:9084", "127.0.0.1:9085")
//	if err != nil { ... }
//	defer c.Close()
//	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
//	defer cancel()
//	if _, err := c.Put(ctx, []byte("key"), []byte("value")); err != nil { ... }
//	kv, err := c.Get(ctx, []byte("key")) // nil kv: no such key
//
// # Routing and retries
//
// Writes and Linearizable/Lease reads go to the leader; the client learns it
// from NOT_LEADER answers (which name the leader) and from Leader, and
// rotates through the endpoints when it is unknown or unreachable. Retryable
// errors (NOT_LEADER, NO_LEADER, OVERLOADED, UNAVAILABLE, SHUTTING_DOWN,
// CHANGE_IN_PROGRESS, per-attempt timeouts and a CANCELLED status the
// caller did not ask for) are retried under the RetryPolicy with exponential
// backoff and jitter; every attempt is bounded by the request timeout and
// the whole operation by the caller's context. docs/clients.md in the
// repository has the retry rule and error table shared with the Rust and
// Python clients.
//
// # Watches
//
// Watch and WatchPrefix stream changes (options: WithRangeEnd, WithFromKey,
// WithStartRevision, WithPrevKV, WithProgressNotify, WithFilters,
// WithWatchBuffer, WithResumeTimeout). A watch resumes by itself, from the
// revision after the last delivered event, after node kills, graceful
// restarts and leader changes, until its context is cancelled; it ends only
// with a typed error (ErrCompacted, ErrOverloaded, ...) whose
// Error.ResumeRevision says where to watch from again.
//
// # Exactly-once writes
//
// Every write carries a WriteId (random client id, sequence number) that is
// the same on all of its retries, so a write whose first attempt was applied
// but whose answer was lost is not applied a second time. When a write fails
// with ErrTimeout, ErrCanceled or ErrUnavailable its outcome is unknown.
//
// # Ranges, transactions, leases
//
// Range reads one page of a key range (WithPrefix, WithRangeEnd,
// WithFromKey, WithLimit...); RangeAll and RangePages are iterators over
// every pair or page. DeleteRange deletes a range in one step. Txn builds an
// atomic If(compares).Then(ops).Else(ops) transaction. Grant, Revoke, Renew,
// TimeToLive and Leases manage leases, Put(..., WithLease(id)) attaches a
// key to one, and KeepAlive renews one in the background and reports its
// loss.
//
// # Errors
//
// Failed operations return an *Error. Test its class with errors.Is and the
// Err* sentinels (ErrNotLeader, ErrNoLeader, ErrInvalidArgument, ErrTimeout,
// ErrUnavailable, ErrOverloaded, ...); read details with errors.As into an
// *Error (Code, Message, Metadata) or, for NOT_LEADER, a *NotLeaderError
// (LeaderID, LeaderAddr). A timeout also matches context.DeadlineExceeded and
// a cancellation context.Canceled.
//
// The generated gRPC stubs are in the subpackage
// github.com/d-engine/d-engine/clients/go/proto/dengine/v1 (package enginev1).
package dengine
