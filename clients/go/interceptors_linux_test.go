//go:build linux

package dengine

import (
	"context"
	"slices"
	"testing"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// clusterInterceptors (a TestCluster step): interceptors given with
// WithUnaryInterceptor / WithStreamInterceptor see the calls a client makes
// to a real cluster — the hook OpenTelemetry's otelgrpc plugs into.
func clusterInterceptors(t *testing.T, cl *testCluster) {
	log := &callLog{}
	rec := &recorder{name: "otel", log: log}
	c := cl.client(WithUnaryInterceptor(rec.unary()), WithStreamInterceptor(rec.stream()))
	ctx := opCtx(t, 30*time.Second)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events, err := c.Watch(wctx, []byte("it/otel/key"))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := c.Put(ctx, []byte("it/otel/key"), []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if kv, err := c.Get(ctx, []byte("it/otel/key")); err != nil || kv == nil || kv.ModRevision != rev {
		t.Fatalf("Get = %+v, %v", kv, err)
	}
	select {
	case ev := <-events:
		if ev.Err != nil || ev.KV.ModRevision != rev {
			t.Fatalf("watch event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
	got := log.snapshot()
	for _, want := range []string{
		"otel " + enginev1.Kv_Put_FullMethodName,
		"otel " + enginev1.Kv_Get_FullMethodName,
		"otel stream " + enginev1.Kv_Watch_FullMethodName,
	} {
		if !slices.Contains(got, want) {
			t.Fatalf("the interceptors did not see %q; they saw %q", want, got)
		}
	}
}
