//go:build linux

package dengine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

var (
	linDuration = flag.Duration("lin.duration", 60*time.Second,
		"how long TestLinearizability runs its workload and faults (e.g. -lin.duration=10m)")
	linClients = flag.Int("lin.clients", 5, "concurrent clients in TestLinearizability")
	linCheck   = flag.Duration("lin.check-timeout", 3*time.Minute,
		"time limit of the porcupine check; a check that runs out is reported, not failed")
	linSeed = flag.Uint64("lin.seed", 0, "random seed of TestLinearizability's workload and faults (0: time-based)")
)

// linReturnUnknown is the return time of an operation whose outcome is
// unknown: it may take effect at any point after its call.
const linReturnUnknown = int64(1) << 62

// linHistory records operations from many goroutines.
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	ids   atomic.Int64 // next porcupine client id
}

func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// TestLinearizability runs concurrent clients doing put / get /
// compare-and-swap on a few keys against a real 3-node cluster while nodes
// are SIGKILLed, SIGSTOPped and restarted, records every operation with its
// invoke and return times, and checks the history with porcupine. A write
// whose outcome the client could not learn (timeout, unavailable) is
// recorded as unknown (it may or may not have happened). On a violation the
// porcupine visualisation is written to an HTML file whose path is printed.
//
// Needs $DENGINE_SERVER_BIN (skipped otherwise). Runs -lin.duration (60s)
// plus setup and checking.
func TestLinearizability(t *testing.T) {
	cl := startCluster(t, 3)
	cl.waitLeader(30 * time.Second)
	seed := *linSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	res, html := runLinearizability(t, cl, *linDuration, *linClients, seed)
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Logf("WARNING: the linearizability check did not finish within %v (-lin.check-timeout); no violation found so far", *linCheck)
	case porcupine.Illegal:
		t.Fatalf("history is NOT linearizable (seed %d); porcupine visualisation: %s", seed, html)
	}
}

// runLinearizability runs the workload and faults against cl for d and
// checks the history. For an Illegal history it writes the porcupine
// visualisation to a temp HTML file and returns its path.
func runLinearizability(t *testing.T, cl *testCluster, d time.Duration, clients int, seed uint64) (porcupine.CheckResult, string) {
	t.Helper()
	t.Logf("seed %d (rerun with -lin.seed=%d), duration %v, %d clients", seed, seed, d, clients)

	keys := []string{"lin/a", "lin/b", "lin/c"}
	h := &linHistory{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var okOps, unknownOps atomic.Int64
	for ci := 0; ci < clients; ci++ {
		c := cl.client(WithRequestTimeout(time.Second), WithDialTimeout(time.Second),
			WithRetryPolicy(8, 20*time.Millisecond, 500*time.Millisecond))
		wg.Add(1)
		go func(ci int, c *Client) {
			defer wg.Done()
			linClient(t, h, c, ci, keys, mrand.New(mrand.NewPCG(seed, uint64(ci))), stop, &okOps, &unknownOps)
		}(ci, c)
	}

	faults := linFaults(t, cl, mrand.New(mrand.NewPCG(seed, 1<<32)), d)
	close(stop)
	wg.Wait()

	h.mu.Lock()
	ops := h.ops
	h.mu.Unlock()
	t.Logf("%d operations (%d completed, %d with unknown outcome), %d faults injected", len(ops), okOps.Load(), unknownOps.Load(), faults)
	if okOps.Load() < 100 {
		t.Fatalf("only %d operations completed: the cluster made too little progress for the check to mean anything", okOps.Load())
	}
	if d >= 10*time.Second && faults == 0 {
		t.Fatal("no fault was injected")
	}

	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, *linCheck)
	t.Logf("porcupine: %s in %v", res, time.Since(began).Round(time.Millisecond))
	if res != porcupine.Illegal {
		return res, ""
	}
	f, err := os.CreateTemp("", "dengine-linearizability-*.html")
	if err != nil {
		t.Fatalf("history is NOT linearizable (and writing the visualisation failed: %v)", err)
	}
	path := f.Name()
	_ = f.Close()
	if err := porcupine.VisualizePath(linModel, info, path); err != nil {
		t.Fatalf("history is NOT linearizable (and writing the visualisation failed: %v)", err)
	}
	return res, path
}

// linClient issues random operations until stop is closed.
func linClient(t *testing.T, h *linHistory, c *Client, ci int, keys []string, rng *mrand.Rand,
	stop <-chan struct{}, okOps, unknownOps *atomic.Int64) {
	id := int(h.ids.Add(1) - 1)
	lastSeen := map[string]string{}
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		key := keys[rng.IntN(len(keys))]
		value := fmt.Sprintf("c%d-%d", ci, n)
		var in linInput
		switch r := rng.IntN(10); {
		case r < 4:
			in = linInput{Kind: linGet, Key: key}
		case r < 7:
			in = linInput{Kind: linPut, Key: key, Value: value}
		default:
			in = linInput{Kind: linCAS, Key: key, Expected: lastSeen[key], Value: value}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		call := h.now()
		var out linOutput
		var err error
		switch in.Kind {
		case linGet:
			var kv *KeyValue
			kv, err = c.Get(ctx, []byte(key))
			if kv != nil {
				out.Value = string(kv.Value)
			}
		case linPut:
			_, err = c.Put(ctx, []byte(key), []byte(in.Value))
		case linCAS:
			var expected []byte
			if in.Expected != "" {
				expected = []byte(in.Expected)
			}
			var res *CASResult
			res, err = c.CompareAndSwap(ctx, []byte(key), expected, []byte(in.Value))
			if err == nil {
				out.OK = res.Succeeded
				if res.Current != nil {
					lastSeen[key] = string(res.Current.Value)
				} else {
					lastSeen[key] = ""
				}
			}
		}
		ret := h.now()
		cancel()
		if errors.Is(err, ErrInvalidArgument) {
			t.Errorf("client %d: %v rejected as invalid: %v", ci, in, err)
			return
		}
		switch {
		case err == nil:
			if in.Kind == linGet {
				lastSeen[key] = out.Value
			}
			okOps.Add(1)
			h.add(porcupine.Operation{ClientId: id, Input: in, Output: out, Call: call, Return: ret})
		case in.Kind == linGet:
			// A failed read has no effect: leave it out.
		default:
			// The write may or may not have been applied, at any time from
			// now on; this logical client can no longer issue ops in order,
			// so continue under a new porcupine client id.
			unknownOps.Add(1)
			h.add(porcupine.Operation{ClientId: id, Input: in, Output: linOutput{Unknown: true}, Call: call, Return: linReturnUnknown})
			id = int(h.ids.Add(1) - 1)
		}
	}
}

// linFaults injects faults for d, then heals the cluster; it returns how many
// faults it injected. At most one node is down or paused at a time, so the
// cluster can always make progress; which node (often the leader) and how
// long are random.
func linFaults(t *testing.T, cl *testCluster, rng *mrand.Rand, d time.Duration) int {
	probe, err := NewClientWithOptions(cl.endpoints(), WithRequestTimeout(500*time.Millisecond),
		WithRetryPolicy(2, 10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	sleep := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)))) }
	deadline := time.Now().Add(d)
	faults := 0
	for time.Now().Add(3 * time.Second).Before(deadline) {
		sleep(500*time.Millisecond, 2*time.Second)
		target := rng.IntN(len(cl.nodes))
		if rng.IntN(2) == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if l := cl.leaderIndex(ctx, probe); l >= 0 {
				target = l
			}
			cancel()
		}
		switch rng.IntN(3) {
		case 0: // crash and restart
			t.Logf("fault %d: SIGKILL node %d", faults, cl.nodes[target].id)
			cl.kill(target)
			sleep(200*time.Millisecond, 2*time.Second)
			cl.start(target)
		case 1: // pause (a GC pause, a stalled VM) and resume
			t.Logf("fault %d: SIGSTOP node %d", faults, cl.nodes[target].id)
			cl.pause(target)
			sleep(200*time.Millisecond, 3*time.Second)
			cl.resume(target)
		default: // pause, then kill while paused, then restart
			t.Logf("fault %d: SIGSTOP then SIGKILL node %d", faults, cl.nodes[target].id)
			cl.pause(target)
			sleep(200*time.Millisecond, time.Second)
			cl.kill(target)
			sleep(200*time.Millisecond, time.Second)
			cl.start(target)
		}
		faults++
	}
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for i := range cl.nodes {
		cl.resume(i)
		if !cl.running(i) {
			cl.start(i)
		}
	}
	return faults
}
