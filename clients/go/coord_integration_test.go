//go:build linux

package dengine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// TestClusterCoordination runs ranges, delete-range, transactions and
// leases against a real 3-node cluster from $DENGINE_SERVER_BIN (skipped
// when unset).
func TestClusterCoordination(t *testing.T) {
	cl := startCluster(t, 3)
	cl.waitLeader(30 * time.Second)
	c := cl.client(WithRequestTimeout(2*time.Second), WithRetryPolicy(12, 50*time.Millisecond, time.Second))

	t.Run("RangePaging", func(t *testing.T) { clusterRangePaging(t, c) })
	t.Run("DeleteRange", func(t *testing.T) { clusterDeleteRange(t, c) })
	t.Run("Txn", func(t *testing.T) { clusterTxn(t, c) })
	t.Run("TxnExactlyOnceRetry", func(t *testing.T) { clusterTxnRetry(t, cl) })
	t.Run("LeaseAttachRevoke", func(t *testing.T) { clusterLeaseRevoke(t, c) })
	t.Run("LeaseExpires", func(t *testing.T) { clusterLeaseExpiry(t, c) })
	t.Run("KeepAlive", func(t *testing.T) { clusterKeepAlive(t, c) })
	t.Run("KeepAliveAcrossLeaderKill", func(t *testing.T) { clusterKeepAliveLeaderKill(t, cl, c) })
}

// putMany writes keys concurrently (8 writers).
func putMany(t *testing.T, ctx context.Context, c *Client, keys []string) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	next := atomic.Int64{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(keys) {
					return
				}
				if _, err := c.Put(ctx, []byte(keys[i]), []byte("v:"+keys[i])); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		t.Fatal(err)
	}
}

func clusterRangePaging(t *testing.T, c *Client) {
	ctx := opCtx(t, 60*time.Second)
	const n = 250
	var keys []string
	for i := 0; i < n; i++ {
		keys = append(keys, fmt.Sprintf("ic/r/%04d", i))
	}
	putMany(t, ctx, c, append(append([]string(nil), keys...), "ic/r0", "ic/q", "ic/r"))

	page, err := c.Range(ctx, []byte("ic/r/"), WithPrefix(), WithLimit(100))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.KVs) != 100 || !page.More || page.Count != n || len(page.NextKey) == 0 || page.Revision == 0 {
		t.Fatalf("first page: %d kvs, more %v, count %d, next %q, revision %d", len(page.KVs), page.More, page.Count, page.NextKey, page.Revision)
	}
	if string(page.KVs[0].Key) != keys[0] || string(page.KVs[0].Value) != "v:"+keys[0] || page.KVs[0].Version != 1 {
		t.Fatalf("first kv %+v", page.KVs[0])
	}

	// Every key exactly once, in order, over several pages.
	seen := map[string]int{}
	var order []string
	pages := 0
	for pg, err := range c.RangePages(ctx, []byte("ic/r/"), WithPrefix(), WithLimit(64)) {
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, kv := range pg.KVs {
			seen[string(kv.Key)]++
			order = append(order, string(kv.Key))
		}
	}
	if pages != 4 || len(order) != n || fmt.Sprint(order) != fmt.Sprint(keys) {
		t.Fatalf("RangePages: %d pages, %d keys (want 4 pages, %d keys in order)", pages, len(order), n)
	}
	for k, times := range seen {
		if times != 1 {
			t.Fatalf("key %s seen %d times", k, times)
		}
	}
	count := 0
	for kv, err := range c.RangeAll(ctx, []byte("ic/r/"), WithPrefix(), WithLimit(7), WithKeysOnly()) {
		if err != nil {
			t.Fatal(err)
		}
		if len(kv.Value) != 0 {
			t.Fatalf("keys-only returned a value for %s", kv.Key)
		}
		count++
	}
	if count != n {
		t.Fatalf("RangeAll saw %d keys, want %d", count, n)
	}
	scan, err := c.ScanPrefix(ctx, []byte("ic/r/"), 0)
	if err != nil || len(scan.KVs) != n || scan.More {
		t.Fatalf("ScanPrefix: %d kvs more %v, %v", len(scan.KVs), scan.More, err)
	}
	cnt, err := c.Range(ctx, []byte("ic/r/"), WithPrefix(), WithCountOnly())
	if err != nil || cnt.Count != n || len(cnt.KVs) != 0 {
		t.Fatalf("count only: %+v, %v", cnt, err)
	}
	sub, err := c.Range(ctx, []byte(keys[10]), WithRangeEnd([]byte(keys[20])))
	if err != nil || len(sub.KVs) != 10 || sub.More || string(sub.KVs[9].Key) != keys[19] {
		t.Fatalf("[10, 20): %+v, %v", sub, err)
	}
	from, err := c.Range(ctx, []byte("ic/r0"), WithFromKey(), WithKeysOnly())
	if err != nil || len(from.KVs) == 0 || string(from.KVs[0].Key) != "ic/r0" {
		t.Fatalf("from key: %+v, %v", from, err)
	}
	one, err := c.Range(ctx, []byte(keys[5]), WithConsistency(Lease))
	if err != nil || len(one.KVs) != 1 || string(one.KVs[0].Key) != keys[5] || one.Count != 1 {
		t.Fatalf("single key: %+v, %v", one, err)
	}
	// Eventual reads may lag: poll.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := c.Range(ctx, []byte("ic/r/"), WithPrefix(), WithCountOnly(), WithConsistency(Eventual))
		if err == nil && ev.Count == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("eventual count: %+v, %v", ev, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The server refuses a limit above its maximum.
	if _, err := c.Range(ctx, []byte("ic/r/"), WithPrefix(), WithLimit(MaxRangeLimit+1)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("limit above max: %v", err)
	}
	// A range ending before its start, sent raw: refused by the server too.
	raw := rawKv(t, c)
	_, err = raw.Range(ctx, &enginev1.RangeRequest{Key: []byte("b"), RangeEnd: []byte("a")})
	if !errors.Is(FromStatus(err), ErrInvalidArgument) {
		t.Fatalf("raw range end before key: %v", err)
	}
}

// rawKv is a raw Kv stub on the leader's connection.
func rawKv(t *testing.T, c *Client) enginev1.KvClient {
	t.Helper()
	ctx := opCtx(t, 10*time.Second)
	li, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cn, err := c.dial(li.Addr, false)
	if err != nil {
		t.Fatal(err)
	}
	return cn.kv
}

func clusterDeleteRange(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	var keys []string
	for i := 0; i < 5; i++ {
		keys = append(keys, fmt.Sprintf("ic/d/%d", i))
	}
	putMany(t, ctx, c, append(append([]string(nil), keys...), "ic/d0", "ic/c"))
	res, err := c.DeleteRange(ctx, []byte("ic/d/"), WithPrefix(), WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 5 || len(res.PrevKVs) != 5 || res.PrevKVsTruncated || res.Revision == 0 {
		t.Fatalf("DeleteRange = %+v", res)
	}
	for i, kv := range res.PrevKVs {
		if string(kv.Key) != keys[i] || string(kv.Value) != "v:"+keys[i] {
			t.Fatalf("prev kv %d = %+v", i, kv)
		}
	}
	if left, err := c.Range(ctx, []byte("ic/d/"), WithPrefix(), WithCountOnly()); err != nil || left.Count != 0 {
		t.Fatalf("after delete-range: %+v, %v", left, err)
	}
	for _, k := range []string{"ic/d0", "ic/c"} {
		if kv, err := c.Get(ctx, []byte(k)); err != nil || kv == nil {
			t.Fatalf("neighbour %s deleted: %v, %v", k, kv, err)
		}
	}
	// A range [ic/c, ic/d1) deletes ic/c and ic/d0; nothing else left there.
	res, err = c.DeleteRange(ctx, []byte("ic/c"), WithRangeEnd([]byte("ic/d1")))
	if err != nil || res.Deleted != 2 || len(res.PrevKVs) != 0 {
		t.Fatalf("DeleteRange [ic/c, ic/d1) = %+v, %v", res, err)
	}
	res, err = c.DeleteRange(ctx, []byte("ic/none"))
	if err != nil || res.Deleted != 0 {
		t.Fatalf("delete of a missing key = %+v, %v", res, err)
	}
}

func clusterTxn(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	k, other := []byte("ic/t/a"), []byte("ic/t/b")
	// Create-if-absent: the Then branch runs.
	res, err := c.Txn(ctx).
		If(CompareVersion(k, Equal, 0)).
		Then(OpPut(k, []byte("1")), OpPut(other, []byte("x")), OpGet(k)).
		Else(OpGet(k)).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || res.Replayed || len(res.Results) != 3 || res.Revision == 0 {
		t.Fatalf("first txn: %+v", res)
	}
	if res.Results[0].Put == nil || res.Results[0].Put.Revision != res.Revision {
		t.Fatalf("put result %+v (txn revision %d)", res.Results[0], res.Revision)
	}
	if r := res.Results[2].Range; r == nil || len(r.KVs) != 1 || string(r.KVs[0].Value) != "1" {
		t.Fatalf("a later op must see an earlier op's write: %+v", res.Results[2])
	}
	created := res.Revision
	// Again: the compare fails, the Else branch runs and reads the key.
	res, err = c.Txn(ctx).
		If(CompareVersion(k, Equal, 0)).
		Then(OpPut(k, []byte("2"))).
		Else(OpGet(k)).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded || len(res.Results) != 1 || res.Results[0].Range == nil {
		t.Fatalf("second txn: %+v", res)
	}
	kv := res.Results[0].Range.KVs[0]
	if string(kv.Value) != "1" || kv.ModRevision != created || kv.CreateRevision != created {
		t.Fatalf("Else read %+v, want value 1 at %d", kv, created)
	}
	// Every compare target and operator.
	res, err = c.Txn(ctx).
		If(CompareValue(k, Equal, []byte("1")),
			CompareValue(k, Less, []byte("2")),
			CompareValue(k, NotEqual, []byte("0")),
			CompareVersion(k, Greater, 0),
			CompareCreateRevision(k, Equal, created),
			CompareModRevision(k, Less, created+1),
			CompareLease(k, Equal, 0),
			CompareVersion([]byte("ic/t/missing"), Equal, 0)).
		Then(OpPut(k, []byte("2")), OpDeleteRange([]byte("ic/t/b"), WithPrevKV())).
		Commit()
	if err != nil || !res.Succeeded {
		t.Fatalf("all compares should hold: %+v, %v", res, err)
	}
	if d := res.Results[1].DeleteRange; d == nil || d.Deleted != 1 || len(d.PrevKVs) != 1 || string(d.PrevKVs[0].Value) != "x" {
		t.Fatalf("delete result %+v", res.Results[1])
	}
	// A value compare on a missing key is false whatever the operator.
	for _, op := range []CompareOp{Equal, NotEqual, Less, Greater} {
		res, err := c.Txn(ctx).If(CompareValue([]byte("ic/t/missing"), op, []byte("x"))).Then(OpPut(k, []byte("bad"))).Commit()
		if err != nil || res.Succeeded {
			t.Fatalf("value %v on a missing key: %+v, %v", op, res, err)
		}
	}
	if kv, _ := c.Get(ctx, k); kv == nil || string(kv.Value) != "2" {
		t.Fatalf("after txns: %+v", kv)
	}
	// Over the op limit, sent raw: the server refuses it, nothing applied.
	raw := rawKv(t, c)
	req := &enginev1.TxnRequest{}
	for i := 0; i <= MaxTxnOps; i++ {
		req.Success = append(req.Success, &enginev1.TxnOp{Op: &enginev1.TxnOp_Put{Put: &enginev1.PutRequest{Key: []byte(fmt.Sprintf("ic/t/many/%d", i))}}})
	}
	if _, err := raw.Txn(ctx, req); !errors.Is(FromStatus(err), ErrInvalidArgument) {
		t.Fatalf("129 ops: %v", err)
	}
	if n, err := c.Range(ctx, []byte("ic/t/many/"), WithPrefix(), WithCountOnly()); err != nil || n.Count != 0 {
		t.Fatalf("a refused txn applied something: %+v, %v", n, err)
	}
	// A txn put attaching a lease that does not exist.
	_, err = c.Txn(ctx).Then(OpPut(k, []byte("3"), WithLease(987654321))).Commit()
	if !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("txn put with an unknown lease: %v", err)
	}
}

// The first answer to a Txn is lost on the way back (the txn was applied):
// the client retries with the same WriteId and the server answers with the
// original outcome, Replayed, instead of running it again.
func clusterTxnRetry(t *testing.T, cl *testCluster) {
	var txns atomic.Int32
	lose := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == enginev1.Kv_Txn_FullMethodName && txns.Add(1) == 1 && err == nil {
			return status.Error(codes.Unavailable, "test: answer lost")
		}
		return err
	})
	c := cl.client(WithRequestTimeout(2*time.Second), WithRetryPolicy(12, 50*time.Millisecond, time.Second),
		optionFunc(func(cfg *config) { cfg.testDialOptions = append(cfg.testDialOptions, lose) }))
	ctx := opCtx(t, 30*time.Second)
	k := []byte("ic/tr/counter")
	if _, err := c.Put(ctx, k, []byte("0")); err != nil {
		t.Fatal(err)
	}
	res, err := c.Txn(ctx).
		If(CompareValue(k, Equal, []byte("0"))).
		Then(OpPut(k, []byte("1"))).
		Else(OpPut(k, []byte("else ran"))).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if txns.Load() < 2 {
		t.Fatalf("%d txn attempts; the first answer was lost, so want a retry", txns.Load())
	}
	if !res.Succeeded || !res.Replayed || res.Revision == 0 {
		t.Fatalf("retried txn: %+v (want the original success, replayed)", res)
	}
	kv, err := c.Get(ctx, k)
	if err != nil || kv == nil || string(kv.Value) != "1" || kv.Version != 2 || kv.ModRevision != res.Revision {
		t.Fatalf("counter %+v, %v: want value 1, version 2 (applied once) at %d", kv, err, res.Revision)
	}
}

func clusterLeaseRevoke(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	g, err := c.Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID == 0 || g.TTL != 30*time.Second {
		t.Fatalf("Grant = %+v", g)
	}
	keys := []string{"ic/l/a", "ic/l/b", "ic/l/c"}
	for _, k := range keys {
		if _, err := c.Put(ctx, []byte(k), []byte("v"), WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := c.Txn(ctx).Then(OpPut([]byte("ic/l/txn"), []byte("v"), WithLease(g.ID))).Commit(); err != nil || !res.Succeeded {
		t.Fatalf("txn put with lease: %+v, %v", res, err)
	}
	if _, err := c.Put(ctx, []byte("ic/l/free"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	kv, err := c.Get(ctx, []byte("ic/l/a"))
	if err != nil || kv == nil || kv.Lease != g.ID {
		t.Fatalf("attached key %+v, %v (lease %d)", kv, err, g.ID)
	}
	if res, err := c.Txn(ctx).If(CompareLease([]byte("ic/l/a"), Equal, g.ID)).Commit(); err != nil || !res.Succeeded {
		t.Fatalf("lease compare: %+v, %v", res, err)
	}
	tl, err := c.TimeToLive(ctx, g.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if tl.ID != g.ID || tl.GrantedTTL != 30*time.Second || tl.Remaining <= 0 || tl.Remaining > 30*time.Second || tl.KeyCount != 4 || len(tl.Keys) != 4 {
		t.Fatalf("TimeToLive = %+v", tl)
	}
	if ttl, err := c.Renew(ctx, g.ID); err != nil || ttl != 30*time.Second {
		t.Fatalf("Renew = %v, %v", ttl, err)
	}
	ls, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range ls {
		found = found || (l.ID == g.ID && l.GrantedTTL == 30*time.Second)
	}
	if !found {
		t.Fatalf("Leases = %+v, missing %d", ls, g.ID)
	}
	rv, err := c.Revoke(ctx, g.ID)
	if err != nil || rv.Deleted != 4 || rv.Revision == 0 {
		t.Fatalf("Revoke = %+v, %v", rv, err)
	}
	left, err := c.Range(ctx, []byte("ic/l/"), WithPrefix())
	if err != nil || len(left.KVs) != 1 || string(left.KVs[0].Key) != "ic/l/free" {
		t.Fatalf("after revoke: %+v, %v", left, err)
	}
	// The lease is gone for every call.
	if _, err := c.TimeToLive(ctx, g.ID, false); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("TimeToLive of a revoked lease: %v", err)
	}
	if _, err := c.Renew(ctx, g.ID); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Renew of a revoked lease: %v", err)
	}
	if _, err := c.Revoke(ctx, g.ID); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("second Revoke: %v", err)
	}
	if _, err := c.Put(ctx, []byte("ic/l/late"), []byte("v"), WithLease(g.ID)); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Put with a revoked lease: %v", err)
	}
	if _, err := c.KeepAlive(ctx, g.ID); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("KeepAlive of a revoked lease: %v", err)
	}
	if kv, _ := c.Get(ctx, []byte("ic/l/late")); kv != nil {
		t.Fatalf("refused put applied: %+v", kv)
	}
	// Bad input from the server: a TTL over a year, sent raw.
	cn, err := c.pick(routeLeader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cn.lease.LeaseGrant(ctx, &enginev1.LeaseGrantRequest{TtlMs: uint64(MaxLeaseTTL/time.Millisecond) + 1}); !errors.Is(FromStatus(err), ErrInvalidArgument) && !errors.Is(FromStatus(err), ErrNotLeader) {
		t.Fatalf("raw grant over a year: %v", err)
	}
}

func clusterLeaseExpiry(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	g, err := c.Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := c.Watch(ctx, []byte("ic/le/k"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, []byte("ic/le/k"), []byte("v"), WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, want := range []EventType{EventPut, EventDelete} {
		select {
		case ev := <-watch:
			if ev.Err != nil || ev.Type != want {
				t.Fatalf("watch event %+v, want %v", ev, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("no %v event within 15s (lease TTL 1s)", want)
		}
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Fatalf("1s lease expired after %v", el)
	}
	if kv, err := c.Get(ctx, []byte("ic/le/k")); err != nil || kv != nil {
		t.Fatalf("expired lease's key: %+v, %v", kv, err)
	}
	if _, err := c.TimeToLive(ctx, g.ID, false); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("TimeToLive of an expired lease: %v", err)
	}
}

func clusterKeepAlive(t *testing.T, c *Client) {
	ctx := opCtx(t, 60*time.Second)
	const ttl = 1500 * time.Millisecond
	g, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	k := []byte("ic/ka/k")
	if _, err := c.Put(ctx, k, []byte("v"), WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	ka, err := c.KeepAlive(kctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ka.TTL() != ttl {
		t.Fatalf("keepalive TTL %v, want %v", ka.TTL(), ttl)
	}
	// Three TTLs later the lease and its key are still there.
	select {
	case <-ka.Done():
		t.Fatalf("keepalive stopped: %v", ka.Err())
	case <-time.After(3 * ttl):
	}
	if kv, err := c.Get(ctx, k); err != nil || kv == nil || kv.Lease != g.ID {
		t.Fatalf("key of a kept-alive lease after 3 TTLs: %+v, %v", kv, err)
	}
	if tl, err := c.TimeToLive(ctx, g.ID, false); err != nil || tl.Remaining <= 0 {
		t.Fatalf("TimeToLive of a kept-alive lease: %+v, %v", tl, err)
	}
	// Revoked behind its back: the keepalive reports the loss.
	if _, err := c.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ka.Done():
	case <-time.After(2 * ttl):
		t.Fatal("loss of a revoked lease not reported within 2 TTLs")
	}
	if !errors.Is(ka.Err(), ErrLeaseNotFound) {
		t.Fatalf("keepalive Err = %v, want ErrLeaseNotFound", ka.Err())
	}
	if kv, _ := c.Get(ctx, k); kv != nil {
		t.Fatalf("revoked lease's key still there: %+v", kv)
	}

	// Stopping the keepalive lets the lease expire.
	g2, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	kctx2, stop2 := context.WithCancel(ctx)
	ka2, err := c.KeepAlive(kctx2, g2.ID)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl)
	stop2()
	<-ka2.Done()
	if ka2.Err() != nil {
		t.Fatalf("stopped keepalive Err = %v", ka2.Err())
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := c.TimeToLive(ctx, g2.ID, false)
		if errors.Is(err, ErrLeaseNotFound) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("lease without keepalive still alive or error: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The leader dies while a keepalive runs: it moves to the new leader and the
// lease (with its key) survives.
func clusterKeepAliveLeaderKill(t *testing.T, cl *testCluster, c *Client) {
	ctx := opCtx(t, 90*time.Second)
	const ttl = 5 * time.Second
	g, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	k := []byte("ic/kak/k")
	if _, err := c.Put(ctx, k, []byte("v"), WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	ka, err := c.KeepAlive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	leader := cl.leaderIndex(ctx, c)
	if leader < 0 {
		t.Fatal("no leader")
	}
	cl.kill(leader)
	select {
	case <-ka.Done():
		t.Fatalf("keepalive lost the lease after the leader was killed: %v", ka.Err())
	case <-time.After(3 * ttl):
	}
	if nl := cl.leaderIndex(ctx, c); nl < 0 || nl == leader {
		t.Fatalf("leader after kill: %d (killed %d)", nl, leader)
	}
	if kv, err := c.Get(ctx, k); err != nil || kv == nil || kv.Lease != g.ID {
		t.Fatalf("key of the kept-alive lease after a leader change: %+v, %v", kv, err)
	}
	if _, err := c.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
}
