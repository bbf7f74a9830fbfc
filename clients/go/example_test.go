package dengine_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"

	dengine "github.com/d-engine/d-engine/clients/go"
)

// The examples below that print nothing under "Output:" need a running
// cluster: `go test` compiles them but does not run them. Start one with
// `d-engine-server` (see the repository README) to try them.

// Connecting does no network I/O: the client connects on first use.
// Endpoints are normalised; "https://" always means TLS.
func ExampleNewClient() {
	c, err := dengine.NewClient("127.0.0.1:9083", "http://127.0.0.1:9084", "node-3")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(c.Endpoints())
	// Output: [127.0.0.1:9083 127.0.0.1:9084 node-3:9083]
}

// Options: per-attempt timeout, retry policy, and gRPC interceptors (the
// hook OpenTelemetry plugs into: otelgrpc's stats handler through
// WithDialOptions(grpc.WithStatsHandler(otelgrpc.NewClientHandler()))).
func ExampleNewClientWithOptions() {
	logCalls := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoke(ctx, method, req, reply, cc, opts...)
		log.Printf("%s took %v: %v", method, time.Since(start), err)
		return err
	}
	c, err := dengine.NewClientWithOptions(
		[]string{"10.0.0.1:9083", "10.0.0.2:9083", "10.0.0.3:9083"},
		dengine.WithRequestTimeout(2*time.Second),
		dengine.WithRetryPolicy(8, 50*time.Millisecond, time.Second),
		dengine.WithUnaryInterceptor(logCalls),
		dengine.WithDialOptions(grpc.WithUserAgent("inventory-service/1.4")),
		// Behind NAT: never dial an advertised address that is not listed.
		dengine.WithRestrictToEndpoints(),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(len(c.Endpoints()), "endpoints")
	// Output: 3 endpoints
}

// Options are checked when the client is made; the error names the option.
func ExampleNewClientWithOptions_badOption() {
	_, err := dengine.NewClientWithOptions([]string{"127.0.0.1:9083"}, dengine.WithRequestTimeout(0))
	fmt.Println(err)
	// Output: d-engine: WithRequestTimeout: timeout must be > 0, got 0s
}

func ExampleClient_Put() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, err := c.Put(ctx, []byte("config/mode"), []byte("active"))
	if err != nil {
		log.Fatal(err)
	}
	kv, err := c.Get(ctx, []byte("config/mode"))
	if err != nil {
		log.Fatal(err)
	}
	if kv == nil {
		log.Fatal("no such key")
	}
	fmt.Printf("%s = %s (written at revision %d)\n", kv.Key, kv.Value, rev)
	// Eventual reads are served by any node and may be stale.
	if _, err := c.Get(ctx, []byte("config/mode"), dengine.WithConsistency(dengine.Eventual)); err != nil {
		log.Fatal(err)
	}
}

// Range reads one page of a range; RangeAll walks every page.
func ExampleClient_Range() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	page, err := c.Range(ctx, []byte("users/"), dengine.WithPrefix(), dengine.WithLimit(100))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(page.KVs), "of", page.Count, "users; more:", page.More)
}

func ExampleClient_RangeAll() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for kv, err := range c.RangeAll(ctx, []byte("users/"), dengine.WithPrefix()) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s\n", kv.Key)
	}
}

// A transaction: move 10 units between two accounts only if the source
// still holds the value read.
func ExampleClient_Txn() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Txn(ctx).
		If(dengine.CompareValue([]byte("acct/a"), dengine.Equal, []byte("100"))).
		Then(
			dengine.OpPut([]byte("acct/a"), []byte("90")),
			dengine.OpPut([]byte("acct/b"), []byte("10")),
		).
		Else(dengine.OpGet([]byte("acct/a"))).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("moved:", res.Succeeded, "at revision", res.Revision)
}

// A lease kept alive in the background; its keys vanish when the process
// stops renewing it.
func ExampleClient_KeepAlive() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lease, err := c.Grant(ctx, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Put(ctx, []byte("services/api/10.0.0.7"), []byte("up"), dengine.WithLease(lease.ID)); err != nil {
		log.Fatal(err)
	}
	ka, err := c.KeepAlive(ctx, lease.ID)
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-ka.Done():
		log.Printf("lease lost: %v", ka.Err()) // e.g. ErrLeaseExpired
	case <-time.After(time.Minute):
	}
}

// A watch resumes by itself across leader changes and restarts; it ends
// only with a typed error, or quietly when ctx is cancelled.
func ExampleClient_Watch() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, err := c.Watch(ctx, []byte("config/"), dengine.WithPrefix(), dengine.WithPrevKV())
	if err != nil {
		log.Fatal(err)
	}
	for ev := range events {
		if ev.Err != nil {
			var e *dengine.Error
			if errors.Is(ev.Err, dengine.ErrCompacted) && errors.As(ev.Err, &e) {
				log.Printf("history gone: re-read, then watch from %d", e.CompactRevision)
			}
			log.Fatal(ev.Err)
		}
		fmt.Printf("%v %s = %s\n", ev.Type, ev.KV.Key, ev.KV.Value)
	}
}

// A distributed lock; the fencing revision orders the holders.
func ExampleClient_Lock() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Lock(ctx, "nightly-report", dengine.WithSessionTTL(15*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(context.Background())
	select {
	case <-l.Lost():
		log.Fatal("lock lost: ", l.Err())
	default:
		fmt.Println("holding the lock, fencing revision", l.Revision())
	}
}

// Leader election: Campaign blocks until this process leads.
func ExampleClient_Campaign() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lead, err := c.Campaign(ctx, "scheduler", []byte("host-a"))
	if err != nil {
		log.Fatal(err)
	}
	defer lead.Resign(context.Background())
	fmt.Println("leading", lead.Name())
	<-lead.Lost() // step down when leadership is lost
}

// Cluster administration: members, node status, leadership transfer.
func ExampleClient_Members() {
	c, err := dengine.NewClient("127.0.0.1:9083")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	members, err := c.Members(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range members {
		fmt.Println(m.ID, m.ClientAddr, m.Role, m.IsLeader)
	}
	st, err := c.NodeStatus(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("node", st.ID, "is", st.Role, "in term", st.Term)
}

// IsRetryable is the "retried" column of the error table: what the client
// already retried by itself within the operation.
func ExampleIsRetryable() {
	c, _ := dengine.NewClient("127.0.0.1:9083")
	_ = c.Close()
	_, err := c.Put(context.Background(), []byte("k"), []byte("v"))
	fmt.Println(errors.Is(err, dengine.ErrClosed), dengine.IsRetryable(err))
	// Output: true false
}
