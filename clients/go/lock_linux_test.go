//go:build linux

package dengine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestClusterLockElection runs the Lock and Election services against a
// real 3-node cluster from $DENGINE_SERVER_BIN (skipped when unset).
func TestClusterLockElection(t *testing.T) {
	cl := startCluster(t, 3)
	cl.waitLeader(30 * time.Second)
	opts := []Option{WithRequestTimeout(2 * time.Second), WithRetryPolicy(12, 50*time.Millisecond, time.Second)}
	c := cl.client(opts...)

	t.Run("BadInput", func(t *testing.T) { clusterLockBadInput(t, c) })
	t.Run("MutualExclusion", func(t *testing.T) { clusterLockMutex(t, cl, opts) })
	t.Run("RevokedHolderPassesOn", func(t *testing.T) { clusterLockRevoked(t, c) })
	t.Run("KilledProcessPassesOn", func(t *testing.T) { clusterLockKilledProcess(t, cl, c) })
	t.Run("WithLock", func(t *testing.T) { clusterWithLock(t, c) })
	t.Run("WaiterAcrossLeaderKill", func(t *testing.T) { clusterLockLeaderKill(t, cl, opts) })
	t.Run("Election", func(t *testing.T) { clusterElection(t, cl, opts) })
}

func clusterLockBadInput(t *testing.T, c *Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Lock(ctx, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Lock with an empty name: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.Campaign(ctx, "", []byte("v")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Campaign with an empty name: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.Lock(ctx, "bad/lease", WithSessionLease(0xdead_beef_0001)); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Lock on an unknown lease: %v, want ErrLeaseNotFound", err)
	}
	kvs, err := c.Range(ctx, []byte("bad/lease/"), WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs.KVs) != 0 {
		t.Fatalf("a refused Lock left keys behind: %v", kvs.KVs)
	}
}

// clusterLockMutex: 6 goroutines (two clients) take the lock 4 times each;
// never two holders at once, fencing tokens strictly increasing in the
// order of acquisition.
func clusterLockMutex(t *testing.T, cl *testCluster, opts []Option) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	clients := []*Client{cl.client(opts...), cl.client(opts...)}
	const workers, rounds = 6, 4
	var (
		inside  atomic.Int32
		mu      sync.Mutex
		tokens  []uint64
		wg      sync.WaitGroup
		errOnce sync.Once
		failure error
	)
	fail := func(err error) { errOnce.Do(func() { failure = err; cancel() }) }
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			for r := 0; r < rounds; r++ {
				l, err := c.Lock(ctx, "mutex/test", WithSessionTTL(5*time.Second))
				if err != nil {
					fail(fmt.Errorf("worker %d round %d: Lock: %w", w, r, err))
					return
				}
				if n := inside.Add(1); n != 1 {
					fail(fmt.Errorf("worker %d: %d holders at once", w, n))
				}
				mu.Lock()
				tokens = append(tokens, l.Revision())
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					fail(fmt.Errorf("worker %d: Unlock: %w", w, err))
					return
				}
				select {
				case <-l.Lost():
				default:
					fail(errors.New("Lost not closed after Unlock"))
				}
			}
		}(w)
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	if len(tokens) != workers*rounds {
		t.Fatalf("%d acquisitions, want %d", len(tokens), workers*rounds)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("fencing tokens not strictly increasing: %v", tokens)
		}
	}
	// Every lease was revoked: nothing is left in the queue.
	rr, err := clients[0].Range(context.Background(), []byte("mutex/test/"), WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.KVs) != 0 {
		t.Fatalf("queue keys left after every Unlock: %d", len(rr.KVs))
	}
}

// clusterLockRevoked: the holder's lease is revoked; it learns of the loss
// (Lost/Err) and the waiter gets the lock with a larger fencing token.
func clusterLockRevoked(t *testing.T, c *Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	holder, err := c.Lock(ctx, "revoked/test", WithSessionTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := c.Lock(ctx, "revoked/test", WithSessionTTL(3*time.Second))
		if err != nil {
			errc <- err
			return
		}
		got <- l
	}()
	select {
	case l := <-got:
		t.Fatalf("waiter got the lock (rev %d) while it is held (rev %d)", l.Revision(), holder.Revision())
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(1500 * time.Millisecond):
	}
	if _, err := c.Revoke(ctx, holder.Lease()); err != nil {
		t.Fatal(err)
	}
	var next *Lock
	select {
	case next = <-got:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lock after the holder's lease was revoked")
	}
	if next.Revision() <= holder.Revision() {
		t.Fatalf("fencing token %d after %d", next.Revision(), holder.Revision())
	}
	select {
	case <-holder.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("the holder was not told that its lease is gone")
	}
	if err := holder.Err(); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("holder.Err() = %v, want ErrLeaseNotFound", err)
	}
	// Unlocking a lost lock is not an error and does not touch the new holder.
	if err := holder.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of a lost lock: %v", err)
	}
	kv, err := c.Get(ctx, next.Key())
	if err != nil || kv == nil {
		t.Fatalf("the new holder's key is gone: %v %v", kv, err)
	}
	if err := next.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// lockHelperEnv makes TestLockHelperProcess act as a lock holder process.
const lockHelperEnv = "DENGINE_GO_LOCK_HELPER"

// TestLockHelperProcess is not a test: run by clusterLockKilledProcess as a
// separate OS process (the test binary re-executed with lockHelperEnv set
// to "endpoints;name;ttl"), it takes the lock, prints "LOCKED <revision>"
// and sleeps until killed.
func TestLockHelperProcess(t *testing.T) {
	arg := os.Getenv(lockHelperEnv)
	if arg == "" {
		t.Skip("helper process for KilledProcessPassesOn")
	}
	parts := strings.Split(arg, ";")
	ttl, _ := time.ParseDuration(parts[2])
	c, err := NewClientWithOptions(strings.Split(parts[0], ","), WithRequestTimeout(2*time.Second))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	l, err := c.Lock(context.Background(), parts[1], WithSessionTTL(ttl))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	fmt.Printf("LOCKED %d %d\n", l.Revision(), l.Lease())
	<-l.Lost()
	fmt.Fprintf(os.Stderr, "lock helper: lost the lock: %v\n", l.Err())
	select {}
}

// clusterLockKilledProcess: a separate process holds the lock and is killed
// with SIGKILL; a waiter here gets it only after the kill, about one TTL
// later, with a larger fencing token.
func clusterLockKilledProcess(t *testing.T, cl *testCluster, c *Client) {
	const ttl = 3 * time.Second
	const name = "killed/test"
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+strings.Join(cl.endpoints(), ",")+";"+name+";"+ttl.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errPath := filepath.Join(t.TempDir(), "helper.stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(errPath)
			t.Logf("helper stderr:\n%s", tailString(string(b), 40))
		}
	}()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var helperRev uint64
	var helperLease LeaseID
	deadline := time.After(30 * time.Second)
	for helperRev == 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("helper process exited without taking the lock")
			}
			if rest, found := strings.CutPrefix(line, "LOCKED "); found {
				f := strings.Fields(rest)
				helperRev, _ = strconv.ParseUint(f[0], 10, 64)
				lease, _ := strconv.ParseUint(f[1], 10, 64)
				helperLease = LeaseID(lease)
			} else if strings.HasPrefix(line, "ERROR") {
				t.Fatalf("helper: %s", line)
			}
		case <-deadline:
			t.Fatal("helper process did not take the lock within 30s")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(chan *Lock, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := c.Lock(ctx, name, WithSessionTTL(ttl))
		if err != nil {
			errc <- err
			return
		}
		got <- l
	}()
	select {
	case l := <-got:
		// Tell a lost lease (the helper stalled past its TTL) from two
		// holders at once.
		ttlInfo, terr := c.TimeToLive(ctx, helperLease, false)
		t.Fatalf("got the lock (rev %d) while the helper process holds it (rev %d); helper lease %x: %+v %v",
			l.Revision(), helperRev, helperLease, ttlInfo, terr)
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(2 * ttl):
		// Two TTLs: the helper's keepalive holds its lease well past one.
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var l *Lock
	select {
	case l = <-got:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(5 * ttl):
		t.Fatalf("the lock did not pass on within %v of the holder's kill", 5*ttl)
	}
	took := time.Since(killed)
	t.Logf("lock passed on %v after SIGKILL (ttl %v); fencing %d -> %d", took, ttl, helperRev, l.Revision())
	if l.Revision() <= helperRev {
		t.Fatalf("fencing token %d after the killed holder's %d", l.Revision(), helperRev)
	}
	// The lease lives at least until ttl after its last renewal; renewals
	// come every ttl/3 (later on a loaded machine), so the lock cannot pass
	// on right at the kill.
	if took < ttl/4 {
		t.Fatalf("lock passed on %v after the kill: before the holder's lease (ttl %v) could expire", took, ttl)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// clusterLockLeaderKill: two waiters queue behind a holder; the cluster's
// leader is killed while they wait. Their Lock calls move to the new leader
// with the same leases, keep their places (first come, first served) and
// the holder keeps the lock (its keepalive follows the new leader).
func clusterLockLeaderKill(t *testing.T, cl *testCluster, opts []Option) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const name = "leaderkill/test"
	hc, w1c, w2c := cl.client(opts...), cl.client(opts...), cl.client(opts...)
	holder, err := hc.Lock(ctx, name, WithSessionTTL(8*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		i int
		l *Lock
	}
	got := make(chan res, 2)
	errc := make(chan error, 2)
	wait := func(i int, c *Client) {
		l, err := c.Lock(ctx, name, WithSessionTTL(8*time.Second))
		if err != nil {
			errc <- err
			return
		}
		got <- res{i, l}
	}
	go wait(1, w1c)
	// Wait until waiter 1 is queued (two keys) before queueing waiter 2.
	for {
		rr, err := hc.Range(ctx, []byte(name+"/"), WithPrefix(), WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if rr.Count == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	go wait(2, w2c)
	time.Sleep(300 * time.Millisecond)
	li := cl.leaderIndex(ctx, hc)
	if li < 0 {
		t.Fatal("no cluster leader")
	}
	cl.kill(li)
	cl.waitLeader(30 * time.Second)
	select {
	case r := <-got:
		t.Fatalf("waiter %d got the lock while it is held", r.i)
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(2 * time.Second):
	}
	select {
	case <-holder.Lost():
		t.Fatalf("holder lost the lock across the leader change: %v", holder.Err())
	default:
	}
	prev := holder.Revision()
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		select {
		case r := <-got:
			if r.i != want {
				t.Fatalf("waiter %d got the lock, want waiter %d (queue order)", r.i, want)
			}
			if r.l.Revision() <= prev {
				t.Fatalf("fencing token %d after %d", r.l.Revision(), prev)
			}
			prev = r.l.Revision()
			if err := r.l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(20 * time.Second):
			t.Fatalf("waiter %d did not get the lock", want)
		}
	}
	cl.start(li)
	cl.waitLeader(30 * time.Second)
}

func clusterWithLock(t *testing.T, c *Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var fencing uint64
	var key []byte
	err := c.WithLock(ctx, "withlock/test", func(ctx context.Context, f uint64) error {
		fencing = f
		rr, err := c.Range(ctx, []byte("withlock/test/"), WithPrefix())
		if err != nil {
			return err
		}
		if len(rr.KVs) != 1 {
			return fmt.Errorf("%d queue keys while held", len(rr.KVs))
		}
		key = rr.KVs[0].Key
		if rr.KVs[0].CreateRevision != f {
			return fmt.Errorf("fencing %d, key created at %d", f, rr.KVs[0].CreateRevision)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fencing == 0 {
		t.Fatal("fencing token 0")
	}
	if kv, err := c.Get(ctx, key); err != nil || kv != nil {
		t.Fatalf("lock key after WithLock: %v %v", kv, err)
	}
	// fn's error comes back, and the lock is released anyway.
	boom := errors.New("boom")
	if err := c.WithLock(ctx, "withlock/test", func(context.Context, uint64) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("WithLock returned %v, want fn's error", err)
	}
	// A lock lost inside fn cancels fn's context and is reported.
	err = c.WithLock(ctx, "withlock/test", func(fctx context.Context, _ uint64) error {
		rr, err := c.Range(fctx, []byte("withlock/test/"), WithPrefix())
		if err != nil || len(rr.KVs) != 1 {
			return fmt.Errorf("range: %v", err)
		}
		if _, err := c.Revoke(fctx, rr.KVs[0].Lease); err != nil {
			return err
		}
		select {
		case <-fctx.Done():
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("fn's context not cancelled after the lease was revoked")
		}
	}, WithSessionTTL(3*time.Second))
	if !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("WithLock after losing the lease: %v, want ErrLeaseNotFound", err)
	}
}

// clusterElection: three candidates on their own clients; the first leads,
// Observe (on a fourth client) sees each leader and proclaimed value in
// turn as the leader resigns, proclaims, or loses its lease.
func clusterElection(t *testing.T, cl *testCluster, opts []Option) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const name = "election/test"
	obs := cl.client(opts...)
	if kv, err := obs.ElectionLeader(ctx, name); err != nil || kv != nil {
		t.Fatalf("leader of an empty election: %v %v", kv, err)
	}
	events, err := obs.Observe(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	next := func(want string) *KeyValue {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("observe channel closed")
			}
			if ev.Err != nil {
				t.Fatalf("observe: %v", ev.Err)
			}
			if string(ev.Leader.Value) != want {
				t.Fatalf("observed leader value %q, want %q", ev.Leader.Value, want)
			}
			return ev.Leader
		case <-time.After(15 * time.Second):
			t.Fatalf("observe: no leader %q within 15s", want)
		}
		return nil
	}
	type result struct {
		i  int
		ld *Leadership
		at time.Time
	}
	won := make(chan result, 3)
	errc := make(chan error, 3)
	campaign := func(i int) {
		c := cl.client(opts...)
		ld, err := c.Campaign(ctx, name, []byte(fmt.Sprintf("candidate-%d", i)), WithSessionTTL(6*time.Second))
		if err != nil {
			errc <- err
			return
		}
		won <- result{i, ld, time.Now()}
	}
	go campaign(1)
	var first result
	select {
	case first = <-won:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("first candidate not elected")
	}
	kv1 := next("candidate-1")
	if kv1.CreateRevision != first.ld.Revision() {
		t.Fatalf("observed leader created at %d, leadership revision %d", kv1.CreateRevision, first.ld.Revision())
	}
	go campaign(2)
	time.Sleep(500 * time.Millisecond) // queue 2 before 3
	go campaign(3)
	select {
	case r := <-won:
		t.Fatalf("candidate %d elected while candidate 1 leads", r.i)
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(2 * time.Second):
	}
	if err := first.ld.Proclaim(ctx, []byte("candidate-1b")); err != nil {
		t.Fatal(err)
	}
	next("candidate-1b")
	if err := first.ld.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.ld.Proclaim(ctx, []byte("x")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Proclaim after Resign: %v, want ErrNotHeld", err)
	}
	var second result
	select {
	case second = <-won:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("nobody elected after the leader resigned")
	}
	if second.i != 2 {
		t.Fatalf("candidate %d elected after 1 resigned, want 2 (queue order)", second.i)
	}
	kv2 := next("candidate-2")
	if kv2.CreateRevision <= kv1.CreateRevision || second.ld.Revision() != kv2.CreateRevision {
		t.Fatalf("leadership revisions: %d then %d (leadership says %d)", kv1.CreateRevision, kv2.CreateRevision, second.ld.Revision())
	}
	if kv, err := obs.ElectionLeader(ctx, name); err != nil || kv == nil || string(kv.Value) != "candidate-2" {
		t.Fatalf("ElectionLeader = %v, %v; want candidate-2", kv, err)
	}
	// The leader's lease ends (as if its process died): candidate 3 leads.
	if _, err := obs.Revoke(ctx, second.ld.Lease()); err != nil {
		t.Fatal(err)
	}
	var third result
	select {
	case third = <-won:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("nobody elected after the leader's lease was revoked")
	}
	if third.i != 3 {
		t.Fatalf("candidate %d elected, want 3", third.i)
	}
	next("candidate-3")
	select {
	case <-second.ld.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("deposed leader not told")
	}
	if err := second.ld.Proclaim(ctx, []byte("stale")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Proclaim by a deposed leader: %v, want ErrNotHeld", err)
	}
	// Observe survives a leader change of the cluster.
	li := cl.leaderIndex(ctx, obs)
	if li < 0 {
		t.Fatal("no cluster leader")
	}
	cl.kill(li)
	cl.waitLeader(30 * time.Second)
	if err := third.ld.Proclaim(ctx, []byte("candidate-3b")); err != nil {
		t.Fatal(err)
	}
	next("candidate-3b")
	if err := third.ld.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	cl.start(li)
	cancel()
	for range events {
	}
}

// tailString is the last n lines of s.
func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
