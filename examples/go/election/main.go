// Command election is one candidate in a leader election on d-engine, from
// Go. It prints every leader of the election as it changes (Observe),
// campaigns with its name as the published value, leads for -seconds, then
// resigns so the next candidate (in campaign order) takes over.
//
// Run three of them and kill the leader (Ctrl-C resigns at once; kill -9
// lets its lease expire after -ttl) to watch another take over:
//
//	go run ./election -name alice -seconds 20    # from examples/go
//	go run ./election -name bob -seconds 20      # in a second shell
//	go run ./election -name carol -seconds 20    # in a third
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
	election := flag.String("election", "example-election", "election name")
	name := flag.String("name", fmt.Sprintf("candidate-%d", os.Getpid()), "this candidate's name (the value it publishes)")
	seconds := flag.Int("seconds", 10, "how long to lead before resigning (0: until Ctrl-C)")
	ttl := flag.Duration("ttl", 5*time.Second, "lease TTL: how long a dead leader keeps the leadership")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, strings.Split(*endpoints, ","), *election, *name, time.Duration(*seconds)*time.Second, *ttl); err != nil &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, dengine.ErrCanceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, endpoints []string, election, name string, lead, ttl time.Duration) error {
	client, err := dengine.NewClient(endpoints...)
	if err != nil {
		return err
	}
	defer client.Close()

	// Print each leader as it changes, until we exit.
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	leaders, err := client.Observe(octx, election)
	if err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	go func() {
		for ev := range leaders {
			if ev.Err != nil {
				log.Printf("observe ended: %v", ev.Err)
				return
			}
			fmt.Printf("[%s] leader of %s: %s (key %s, revision %d)\n", name, election, ev.Leader.Value, ev.Leader.Key, ev.Leader.CreateRevision)
		}
	}()

	fmt.Printf("[%s] campaigning in %s\n", name, election)
	ld, err := client.Campaign(ctx, election, []byte(name), dengine.WithSessionTTL(ttl))
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ld.Resign(rctx); err != nil {
			log.Printf("resign: %v", err)
		} else {
			fmt.Printf("[%s] resigned\n", name)
		}
	}()
	fmt.Printf("[%s] elected (fencing token %d)\n", name, ld.Revision())

	var done <-chan time.Time
	if lead > 0 {
		done = time.After(lead)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			// A leader's work goes here; publish progress as the value.
			if err := ld.Proclaim(ctx, []byte(name+" @ "+time.Now().Format(time.TimeOnly))); err != nil {
				return fmt.Errorf("proclaim: %w", err)
			}
		case <-ld.Lost():
			return fmt.Errorf("leadership lost: %w", ld.Err())
		case <-done:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
