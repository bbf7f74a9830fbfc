// Command watch shows d-engine watches from Go: it watches the prefix
// "config/", writes a few keys, prints each change with its revision, and
// stops after the changes it made (or on Ctrl-C).
//
//	go run ./watch                     # from examples/go, server on 127.0.0.1:9083
package main

import (
	"context"
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
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, strings.Split(*endpoints, ",")); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, endpoints []string) error {
	client, err := dengine.NewClient(endpoints...)
	if err != nil {
		return err
	}
	defer client.Close()

	// Watch returns once the server has created the watch: every change
	// committed from now on is delivered, in revision order.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	events, err := client.WatchPrefix(ctx, []byte("config/"))
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}

	writes := []struct{ key, value string }{
		{"config/feature-x", "on"},
		{"config/timeout", "5s"},
		{"config/feature-x", "off"},
	}
	go func() {
		for _, w := range writes {
			if _, err := client.Put(ctx, []byte(w.key), []byte(w.value)); err != nil {
				log.Printf("put %s: %v", w.key, err)
				return
			}
		}
		if _, err := client.Delete(ctx, []byte("config/timeout")); err != nil {
			log.Printf("delete: %v", err)
		}
	}()

	want := len(writes) + 1
	for ev := range events {
		if ev.Err != nil {
			// The watch ended for a reason other than our cancel (the server
			// cancelled it, the cluster stayed unreachable...).
			return fmt.Errorf("watch ended: %w", ev.Err)
		}
		fmt.Printf("rev %d: %s %s = %q\n", ev.Revision(), ev.Type, ev.KV.Key, ev.KV.Value)
		if want--; want == 0 {
			cancel() // we saw our changes; the channel closes without an error
		}
	}
	if want > 0 && ctx.Err() != nil {
		return fmt.Errorf("saw only %d of %d changes before the deadline", len(writes)+1-want, len(writes)+1)
	}
	return nil
}
