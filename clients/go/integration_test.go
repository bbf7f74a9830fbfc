//go:build linux

package dengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

// TestCluster runs the client against a real 3-node d-engine-server cluster
// started from $DENGINE_SERVER_BIN (skipped when unset). Bounded: about a
// minute on a healthy cluster, 3 minutes at worst.
func TestCluster(t *testing.T) {
	cl := startCluster(t, 3)
	cl.waitLeader(30 * time.Second)
	c := cl.client(WithRequestTimeout(2*time.Second), WithRetryPolicy(12, 50*time.Millisecond, time.Second))

	t.Run("PutGet", func(t *testing.T) { clusterPutGet(t, c) })
	t.Run("TTL", func(t *testing.T) { clusterTTL(t, c) })
	t.Run("CompareAndSwap", func(t *testing.T) { clusterCAS(t, c) })
	t.Run("ScanAndMulti", func(t *testing.T) { clusterScan(t, c) })
	t.Run("Watch", func(t *testing.T) { clusterWatch(t, c) })
	t.Run("Membership", func(t *testing.T) { clusterMembers(t, c) })
	t.Run("Interceptors", func(t *testing.T) { clusterInterceptors(t, cl) })
	t.Run("LeaderKillDuringWrites", func(t *testing.T) { clusterLeaderKill(t, cl, c) })
}

func opCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func clusterPutGet(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	r1, err := c.Put(ctx, []byte("it/a"), []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Put(ctx, []byte("it/a"), []byte("2"))
	if err != nil {
		t.Fatal(err)
	}
	if r2 <= r1 {
		t.Fatalf("revisions not increasing: %d then %d", r1, r2)
	}
	kv, err := c.Get(ctx, []byte("it/a"))
	if err != nil || kv == nil {
		t.Fatalf("Get = %v, %v", kv, err)
	}
	if string(kv.Value) != "2" || kv.ModRevision != r2 || kv.CreateRevision != r1 || kv.Version != 2 {
		t.Fatalf("Get = %+v; want value 2, mod %d, create %d, version 2", kv, r2, r1)
	}
	for _, cons := range []Consistency{Lease, Eventual} {
		// An eventual read may be served by a lagging follower: poll briefly.
		deadline := time.Now().Add(5 * time.Second)
		for {
			kv, err = c.Get(ctx, []byte("it/a"), WithConsistency(cons))
			if err == nil && kv != nil && string(kv.Value) == "2" {
				break
			}
			if cons != Eventual || time.Now().After(deadline) {
				t.Fatalf("%v Get = %+v, %v", cons, kv, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if kv, err := c.Get(ctx, []byte("it/missing")); err != nil || kv != nil {
		t.Fatalf("missing key: %+v, %v", kv, err)
	}
	if ok, err := c.Delete(ctx, []byte("it/a")); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if ok, err := c.Delete(ctx, []byte("it/a")); err != nil || ok {
		t.Fatalf("second Delete = %v, %v", ok, err)
	}
	if kv, err := c.Get(ctx, []byte("it/a")); err != nil || kv != nil {
		t.Fatalf("after delete: %+v, %v", kv, err)
	}
	// Bad input gets a clear, non-retried error from the server.
	_, err = c.Put(ctx, []byte("it/big"), bytes.Repeat([]byte("x"), 8<<20))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("8 MiB value: want ErrInvalidArgument, got %v", err)
	}
}

func clusterTTL(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	if _, err := c.PutWithTTL(ctx, []byte("it/ttl"), []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	kv, err := c.Get(ctx, []byte("it/ttl"))
	if err != nil || kv == nil || kv.ExpiresAt.IsZero() {
		t.Fatalf("fresh TTL key: %+v, %v", kv, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		kv, err := c.Get(ctx, []byte("it/ttl"))
		if err != nil {
			t.Fatal(err)
		}
		if kv == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key with a 1s TTL still present after 15s: %+v", kv)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func clusterCAS(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	key := []byte("it/cas")
	res, err := c.CompareAndSwap(ctx, key, nil, []byte("v1"))
	if err != nil || !res.Succeeded {
		t.Fatalf("create-if-absent: %+v, %v", res, err)
	}
	res, err = c.CompareAndSwap(ctx, key, nil, []byte("other"))
	if err != nil || res.Succeeded || res.Current == nil || string(res.Current.Value) != "v1" {
		t.Fatalf("second create-if-absent must fail showing v1: %+v, %v", res, err)
	}
	res, err = c.CompareAndSwap(ctx, key, []byte("wrong"), []byte("v2"))
	if err != nil || res.Succeeded {
		t.Fatalf("CAS with wrong expected value succeeded: %+v, %v", res, err)
	}
	res, err = c.CompareAndSwap(ctx, key, []byte("v1"), []byte("v2"))
	if err != nil || !res.Succeeded {
		t.Fatalf("CAS v1->v2: %+v, %v", res, err)
	}
	if kv, _ := c.Get(ctx, key); kv == nil || string(kv.Value) != "v2" {
		t.Fatalf("after CAS: %+v", kv)
	}
	res, err = c.CompareAndDelete(ctx, key, []byte("v2"))
	if err != nil || !res.Succeeded {
		t.Fatalf("CompareAndDelete: %+v, %v", res, err)
	}
	if kv, _ := c.Get(ctx, key); kv != nil {
		t.Fatalf("after CompareAndDelete: %+v", kv)
	}
}

func clusterScan(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	var want []string
	for i := 0; i < 5; i++ {
		k := fmt.Sprintf("it/scan/%02d", i)
		want = append(want, k)
		if _, err := c.Put(ctx, []byte(k), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, []byte("it/scanx"), []byte("not in prefix")); err != nil {
		t.Fatal(err)
	}
	res, err := c.ScanPrefix(ctx, []byte("it/scan/"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range res.KVs {
		got = append(got, string(kv.Key))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || res.More {
		t.Fatalf("ScanPrefix = %v more=%v, want %v", got, res.More, want)
	}
	res, err = c.ScanPrefix(ctx, []byte("it/scan/"), 2)
	if err != nil || len(res.KVs) != 2 || !res.More || string(res.KVs[0].Key) != want[0] {
		t.Fatalf("ScanPrefix limit 2 = %+v, %v", res, err)
	}
	kvs, err := c.GetMulti(ctx, [][]byte{[]byte(want[3]), []byte("it/none"), []byte(want[0])})
	if err != nil || len(kvs) != 3 || kvs[1] != nil || string(kvs[0].Value) != want[3] || string(kvs[2].Value) != want[0] {
		t.Fatalf("GetMulti = %v, %v", kvs, err)
	}
}

func clusterWatch(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	keyCh, err := c.Watch(wctx, []byte("it/w/key"))
	if err != nil {
		t.Fatal(err)
	}
	prefCh, err := c.WatchPrefix(wctx, []byte("it/w/"))
	if err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	for i := 0; i < 3; i++ {
		r, err := c.Put(ctx, []byte("it/w/key"), []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r)
	}
	rOther, err := c.Put(ctx, []byte("it/w/other"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	rDel, err := c.Delete(ctx, []byte("it/w/key"))
	if err != nil || !rDel {
		t.Fatalf("delete: %v %v", rDel, err)
	}
	next := func(ch <-chan WatchEvent) WatchEvent {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed early")
			}
			if ev.Err != nil {
				t.Fatalf("watch ended: %v", ev.Err)
			}
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10s")
		}
		return WatchEvent{}
	}
	for i, r := range revs {
		ev := next(keyCh)
		if ev.Type != EventPut || ev.Revision() != r || string(ev.KV.Value) != fmt.Sprint(i) {
			t.Fatalf("key watch event %d = %+v, want PUT %d at %d", i, ev, i, r)
		}
	}
	if ev := next(keyCh); ev.Type != EventDelete || ev.Revision() <= rOther {
		t.Fatalf("want DELETE after revision %d, got %+v", rOther, ev)
	}
	var prefRevs []uint64
	for i := 0; i < 5; i++ {
		prefRevs = append(prefRevs, next(prefCh).Revision())
	}
	if !sort.SliceIsSorted(prefRevs, func(i, j int) bool { return prefRevs[i] < prefRevs[j] }) || prefRevs[3] != rOther {
		t.Fatalf("prefix watch revisions %v (other put at %d)", prefRevs, rOther)
	}
	// Replay from a start revision.
	replay, err := c.Watch(wctx, []byte("it/w/key"), WithStartRevision(revs[1]))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(replay); ev.Revision() != revs[1] {
		t.Fatalf("replay from %d began at %+v", revs[1], ev)
	}
	stop()
	select {
	case ev, ok := <-keyCh:
		for ok && ev.Err == nil { // drain buffered events
			ev, ok = <-keyCh
		}
		if ok {
			t.Fatalf("cancelled watch ended with an error: %v", ev.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch channel not closed after cancel")
	}
}

func clusterMembers(t *testing.T, c *Client) {
	ctx := opCtx(t, 30*time.Second)
	ms, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("Members = %+v, want 3", ms)
	}
	li, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, m := range ms {
		if m.Role != RoleVoter || m.ClientAddr == "" {
			t.Errorf("member %+v: want a voter with a client address", m)
		}
		if m.IsLeader {
			leaders++
			if m.ID != li.ID || m.ClientAddr != li.Addr {
				t.Errorf("Members says leader %+v, Leader says %+v", m, li)
			}
		}
	}
	if leaders > 1 {
		t.Fatalf("%d leaders in %+v", leaders, ms)
	}
}

// Writers keep writing distinct keys; the leader is SIGKILLed; every write
// that was acknowledged must be readable afterwards, writes must resume on a
// new leader, and the restarted node must catch up.
func clusterLeaderKill(t *testing.T, cl *testCluster, c *Client) {
	ctx := opCtx(t, 90*time.Second)
	leader := cl.leaderIndex(ctx, c)
	if leader < 0 {
		t.Fatal("no leader before the kill")
	}

	var mu sync.Mutex
	acked := map[string]string{}
	var ackedAfterKill int
	killed := make(chan struct{})
	stopWriters := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopWriters:
					return
				default:
				}
				k, v := fmt.Sprintf("it/kill/%d/%05d", w, i), fmt.Sprintf("v%d-%d", w, i)
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.Put(wctx, []byte(k), []byte(v))
				cancel()
				if err != nil {
					continue // outcome unknown: not counted as acknowledged
				}
				mu.Lock()
				acked[k] = v
				select {
				case <-killed:
					ackedAfterKill++
				default:
				}
				mu.Unlock()
			}
		}(w)
	}
	time.Sleep(time.Second)
	cl.kill(leader)
	killedAt := time.Now()
	close(killed)
	// Keep writing until the survivors have acknowledged plenty, bounded.
	for time.Since(killedAt) < 30*time.Second {
		mu.Lock()
		n := ackedAfterKill
		mu.Unlock()
		if n >= 50 && time.Since(killedAt) > 2*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stopWriters)
	wg.Wait()
	t.Logf("%d writes acknowledged, %d after the leader (node %d) was killed", len(acked), ackedAfterKill, cl.nodes[leader].id)
	if ackedAfterKill < 50 {
		t.Fatalf("only %d writes acknowledged in 30s after the leader was killed", ackedAfterKill)
	}
	if nl := cl.leaderIndex(ctx, c); nl == leader || nl < 0 {
		t.Fatalf("leader after kill = %d (killed %d)", nl, leader)
	}
	// No acknowledged write lost (linearizable reads on the new leader).
	keys := make([][]byte, 0, len(acked))
	for k := range acked {
		keys = append(keys, []byte(k))
	}
	for start := 0; start < len(keys); start += 100 {
		end := min(start+100, len(keys))
		kvs, err := c.GetMulti(ctx, keys[start:end])
		if err != nil {
			t.Fatal(err)
		}
		for i, kv := range kvs {
			k := string(keys[start+i])
			if kv == nil || string(kv.Value) != acked[k] {
				t.Fatalf("acknowledged write %s=%s lost: read %+v", k, acked[k], kv)
			}
		}
	}
	// The killed node restarts and catches up (eventual reads on it alone).
	cl.start(leader)
	only, err := NewClientWithOptions([]string{cl.nodes[leader].clientAddr}, WithRequestTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	probe := keys[len(keys)-1]
	deadline := time.Now().Add(30 * time.Second)
	for {
		kv, err := only.Get(ctx, probe, WithConsistency(Eventual))
		if err == nil && kv != nil && string(kv.Value) == acked[string(probe)] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node %d did not catch up within 30s: %+v, %v", cl.nodes[leader].id, kv, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
