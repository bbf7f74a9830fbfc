// Command discovery shows service discovery on d-engine leases from Go: it
// registers an instance under services/<service>/<name> with a lease kept
// alive in the background, lists the service's instances (every page), then
// watches the prefix from the revision after the listing, so no change is
// missed, and prints joins and leaves. Ctrl-C (or -duration) deregisters the
// instance at once by revoking its lease; if the process dies instead, the
// lease expires after -ttl and the instance disappears by itself.
//
//	go run ./discovery -name api-1 -addr 10.0.0.1:8080      # from examples/go
//	go run ./discovery -name api-2 -addr 10.0.0.2:8080      # in another shell
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	dengine "github.com/d-engine/d-engine/clients/go"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:9083", "comma-separated client addresses of the cluster's nodes")
	service := flag.String("service", "api", "service name")
	name := flag.String("name", fmt.Sprintf("instance-%d", os.Getpid()), "this instance's name")
	addr := flag.String("addr", "127.0.0.1:8080", "this instance's address (the registered value)")
	ttl := flag.Duration("ttl", 5*time.Second, "lease TTL: how long a dead instance stays listed")
	duration := flag.Duration("duration", 0, "stop after this long (0: until Ctrl-C)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if err := run(ctx, strings.Split(*endpoints, ","), *service, *name, *addr, *ttl); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, endpoints []string, service, name, addr string, ttl time.Duration) error {
	client, err := dengine.NewClient(endpoints...)
	if err != nil {
		return err
	}
	defer client.Close()
	prefix := []byte("services/" + service + "/")

	// Register: a lease, our key attached to it, a keepalive.
	lease, err := client.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	if _, err := client.Put(ctx, []byte(string(prefix)+name), []byte(addr), dengine.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	ka, err := client.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	defer func() {
		// Deregister at once (a fresh context: ctx is done by now).
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := client.Revoke(rctx, lease.ID); err != nil && !errors.Is(err, dengine.ErrLeaseNotFound) {
			log.Printf("revoke: %v", err)
		}
	}()
	fmt.Printf("registered %s%s = %s (lease %d, ttl %v)\n", prefix, name, addr, lease.ID, lease.TTL)

	// List every instance, page by page; remember the first page's revision.
	var listedAt uint64
	for page, err := range client.RangePages(ctx, prefix, dengine.WithPrefix()) {
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		if listedAt == 0 {
			listedAt = page.Revision
		}
		for _, kv := range page.KVs {
			fmt.Printf("instance %s at %s\n", kv.Key[len(prefix):], kv.Value)
		}
	}

	// Follow the prefix from just after the listing: nothing is missed.
	events, err := client.WatchPrefix(ctx, prefix, dengine.WithStartRevision(listedAt+1))
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return nil // ctx is done
			}
			if ev.Err != nil {
				return fmt.Errorf("watch ended: %w", ev.Err)
			}
			switch ev.Type {
			case dengine.EventPut:
				fmt.Printf("rev %d: %s joined at %s\n", ev.Revision(), ev.KV.Key[len(prefix):], ev.KV.Value)
			case dengine.EventDelete:
				fmt.Printf("rev %d: %s left\n", ev.Revision(), ev.KV.Key[len(prefix):])
			}
		case <-ka.Done():
			if err := ka.Err(); err != nil {
				// Our registration is gone (or can no longer be guaranteed).
				return fmt.Errorf("lease lost: %w", err)
			}
			return nil // ctx is done
		}
	}
}
