// Command quickstart is the standalone-mode Go snippet of the d-engine
// README: connect to a running d-engine-server, write a key, read it back.
//
//	d-engine-server &                  # single node, client port 9083
//	go run ./quickstart                # from examples/go
//	go run ./quickstart -endpoints 127.0.0.1:9083,127.0.0.1:9084,127.0.0.1:9085
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"strings"
	"time"

	dengine "github.com/d-engine/d-engine/clients/go"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:9083", "comma-separated client addresses of the cluster's nodes")
	flag.Parse()
	if err := run(strings.Split(*endpoints, ",")); err != nil {
		log.Fatal(err)
	}
}

func run(endpoints []string) error {
	client, err := dengine.NewClient(endpoints...)
	if err != nil {
		return err
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	rev, err := client.Put(ctx, []byte("key"), []byte("value"))
	if err != nil {
		if errors.Is(err, dengine.ErrTimeout) || errors.Is(err, dengine.ErrUnavailable) {
			return fmt.Errorf("is d-engine-server running at %v? %w", endpoints, err)
		}
		return fmt.Errorf("put: %w", err)
	}
	fmt.Printf("put key=value at revision %d\n", rev)

	kv, err := client.Get(ctx, []byte("key")) // linearizable by default
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if kv == nil {
		return errors.New("get: key not found right after put")
	}
	fmt.Printf("get key -> %q (created at %d, modified at %d, version %d)\n",
		kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)

	// Compare-and-swap: only one of several racing writers wins.
	res, err := client.CompareAndSwap(ctx, []byte("key"), []byte("value"), []byte("value2"))
	if err != nil {
		return fmt.Errorf("compare-and-swap: %w", err)
	}
	fmt.Printf("compare-and-swap value -> value2: succeeded=%v\n", res.Succeeded)

	// A key that expires by itself.
	if _, err := client.PutWithTTL(ctx, []byte("session/42"), []byte("alive"), 30*time.Second); err != nil {
		return fmt.Errorf("put with ttl: %w", err)
	}

	leader, err := client.Leader(ctx)
	if err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	fmt.Printf("leader: node %d at %s\n", leader.ID, leader.Addr)
	return nil
}
