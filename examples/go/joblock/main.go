// Command joblock shows a distributed job lock on d-engine from Go: several
// workers (goroutines here; run the command in several shells to race
// processes too) take turns on the lock "jobs/<job>", and each holder
// increments a shared counter with a *fenced* write: a transaction that
// applies only if the holder's lock key still exists with the creation
// revision Lock returned (its fencing token). A holder whose lease expired
// while it was stalled — so another worker may hold the lock now — has its
// write refused instead of clobbering the newer holder's.
//
// If a worker process dies holding the lock, its lease expires after -ttl
// and the next waiter (in queue order) gets the lock.
//
//	go run ./joblock -workers 3 -rounds 5                # from examples/go
//	go run ./joblock -workers 1 -rounds 1 -hold 30s      # hold it; kill -9 me
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	dengine "github.com/d-engine/d-engine/clients/go"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:9083", "comma-separated client addresses of the cluster's nodes")
	job := flag.String("job", "nightly", "job name: the lock is jobs/<job>")
	workers := flag.Int("workers", 3, "workers racing for the lock in this process")
	rounds := flag.Int("rounds", 3, "times each worker runs the job")
	hold := flag.Duration("hold", 200*time.Millisecond, "how long a worker holds the lock per round")
	ttl := flag.Duration("ttl", 5*time.Second, "lease TTL: how long a dead holder blocks the lock")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	client, err := dengine.NewClient(strings.Split(*endpoints, ",")...)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	var wg sync.WaitGroup
	errs := make([]error, *workers)
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("pid%d/worker%d", os.Getpid(), w)
			for range *rounds {
				if err := runJob(ctx, client, *job, name, *hold, *ttl); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		log.Fatal(err)
	}
	kv, err := client.Get(ctx, counterKey(*job))
	if err != nil {
		log.Fatal(err)
	}
	if kv != nil {
		fmt.Printf("counter %s = %s\n", kv.Key, kv.Value)
	}
}

func counterKey(job string) []byte { return []byte("jobs-data/" + job + "/counter") }

// runJob takes the lock, runs one round of the job and releases the lock.
func runJob(ctx context.Context, client *dengine.Client, job, worker string, hold, ttl time.Duration) error {
	l, err := client.Lock(ctx, "jobs/"+job, dengine.WithSessionTTL(ttl))
	if err != nil {
		return fmt.Errorf("%s: lock: %w", worker, err)
	}
	defer func() {
		// A fresh context: ctx may be done by now.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Unlock(uctx); err != nil {
			log.Printf("%s: unlock: %v", worker, err)
		}
	}()
	fmt.Printf("%s: holds jobs/%s (fencing token %d)\n", worker, job, l.Revision())

	// The job: read the counter, "work", write counter+1 — fenced.
	key := counterKey(job)
	kv, err := client.Get(ctx, key)
	if err != nil {
		return err
	}
	n := 0
	if kv != nil {
		n, _ = strconv.Atoi(string(kv.Value))
	}
	select {
	case <-time.After(hold):
	case <-l.Lost():
		return fmt.Errorf("%s: lost the lock while working: %w", worker, l.Err())
	case <-ctx.Done():
		return ctx.Err()
	}
	res, err := client.Txn(ctx).
		// Our lock key still exists, created at our fencing token: we
		// still hold the lock at the revision this write is applied.
		If(dengine.CompareCreateRevision(l.Key(), dengine.Equal, l.Revision())).
		Then(dengine.OpPut(key, []byte(strconv.Itoa(n+1)))).
		Commit()
	if err != nil {
		return err
	}
	if !res.Succeeded {
		fmt.Printf("%s: fenced write refused: the lock passed to another holder\n", worker)
		return nil
	}
	fmt.Printf("%s: counter %d -> %d at revision %d\n", worker, n, n+1, res.Revision)
	return nil
}
