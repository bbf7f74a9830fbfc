//go:build linux

package dengine

import (
	"context"
	"testing"
	"time"
)

// TestClusterWatchOptions checks the watch options against a real 3-node
// cluster from $DENGINE_SERVER_BIN (skipped when unset): a [key, end) range
// watch with WithPrevKV and FilterNoDelete delivers exactly the puts inside
// the range, each with the value it replaced; an idle WithProgressNotify
// watch learns the current revision.
func TestClusterWatchOptions(t *testing.T) {
	cl := startClusterExtra(t, 3, serverBin(t), nil, "\n[watch]\nprogress_interval_ms = 200\n")
	cl.waitLeader(30 * time.Second)
	c := cl.client(WithRequestTimeout(2*time.Second), WithRetryPolicy(12, 50*time.Millisecond, time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := c.Put(ctx, []byte("wo/b"), []byte("old-b")); err != nil {
		t.Fatal(err)
	}
	events, err := c.Watch(ctx, []byte("wo/a"), WithRangeEnd([]byte("wo/c")), WithPrevKV(),
		WithFilters(FilterNoDelete))
	if err != nil {
		t.Fatal(err)
	}
	// Inside the range: a, b (overwrite), and a delete (filtered out);
	// outside: wo/c and wo/0.
	writes := []struct {
		key, value string
		del        bool
	}{
		{"wo/a", "1", false}, {"wo/0", "x", false}, {"wo/b", "new-b", false},
		{"wo/c", "x", false}, {"wo/a", "", true}, {"wo/bz", "2", false},
	}
	for _, w := range writes {
		if w.del {
			if _, err := c.Delete(ctx, []byte(w.key)); err != nil {
				t.Fatal(err)
			}
		} else if _, err := c.Put(ctx, []byte(w.key), []byte(w.value)); err != nil {
			t.Fatal(err)
		}
	}
	want := []struct{ key, value, prev string }{
		{"wo/a", "1", ""}, {"wo/b", "new-b", "old-b"}, {"wo/bz", "2", ""},
	}
	for i, w := range want {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Fatalf("event %d: watch ended: %v", i, ev.Err)
			}
			if ev.Type != EventPut || string(ev.KV.Key) != w.key || string(ev.KV.Value) != w.value {
				t.Fatalf("event %d: got %v %q=%q, want PUT %q=%q", i, ev.Type, ev.KV.Key, ev.KV.Value, w.key, w.value)
			}
			switch {
			case w.prev == "" && ev.PrevKV != nil:
				t.Fatalf("event %d: PrevKV %q for a key that did not exist", i, ev.PrevKV.Value)
			case w.prev != "" && (ev.PrevKV == nil || string(ev.PrevKV.Value) != w.prev):
				t.Fatalf("event %d: PrevKV %v, want %q", i, ev.PrevKV, w.prev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d (%q) did not arrive", i, w.key)
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected event after the last expected one: %v %q", ev.Type, ev.KV.Key)
	case <-time.After(300 * time.Millisecond):
	}

	// Progress: an idle watch on a key nobody writes learns the revision.
	last, err := c.Put(ctx, []byte("wo/last"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	idle, err := c.Watch(ctx, []byte("wo/idle"), WithProgressNotify())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-idle:
			if ev.Err != nil {
				t.Fatalf("idle watch ended: %v", ev.Err)
			}
			if !ev.IsProgress() {
				t.Fatalf("idle watch got a change: %v %q", ev.Type, ev.KV.Key)
			}
			if ev.ProgressRevision >= last {
				return
			}
		case <-deadline:
			t.Fatalf("no progress notification reached revision %d", last)
		}
	}
}
