//go:build linux

package dengine

// The Go driver of the cross-language conformance suite (issue 18): it runs
// every scenario of tests/conformance/scenarios.json against real
// d-engine-server processes through this package's public API and asserts
// the outcome the data states. The Rust and Python drivers run the same file;
// docs/clients.md ("Conformance suite") describes the step vocabulary.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// conformanceErrors is Go's row of the error table in docs/clients.md for
// the error names the scenarios use: contract name -> sentinel.
var conformanceErrors = map[string]error{
	"NOT_LEADER":         ErrNotLeader,
	"NO_LEADER":          ErrNoLeader,
	"INVALID_ARGUMENT":   ErrInvalidArgument,
	"OVERLOADED":         ErrOverloaded,
	"TIMEOUT":            ErrTimeout,
	"SHUTTING_DOWN":      ErrShuttingDown,
	"STORAGE":            ErrStorage,
	"CHANGE_IN_PROGRESS": ErrChangeInProgress,
	"COMPACTED":          ErrCompacted,
	"UNAUTHENTICATED":    ErrUnauthenticated,
	"PERMISSION_DENIED":  ErrPermissionDenied,
	"UNKNOWN_NODE":       ErrUnknownNode,
	"NO_SPACE":           ErrNoSpace,
	"LEASE_NOT_FOUND":    ErrLeaseNotFound,
	"NOT_HELD":           ErrNotHeld,
	"UNAVAILABLE":        ErrUnavailable,
	"CLIENT_CLOSED":      ErrClosed,
	"WATCH_CANCELED":     ErrWatchCanceled,
	"INTERNAL":           ErrInternal,
}

// The servers' Raft timing for the suite: fast elections keep failover
// short (the same numbers as the Python harness).
const conformanceRaftTOML = "\n[raft]\ntick_ms = 10\nelection_timeout_ms = 300\nheartbeat_interval_ms = 50\nlease_drift_margin_ms = 60\n"

// confOpTimeout is the operation timeout of every call (the Rust and Python
// clients' default; Go takes it from the caller's context).
const confOpTimeout = 10 * time.Second

type confFile struct {
	Format    int                       `json:"format"`
	Errors    map[string]confErrorClass `json:"errors"`
	Scenarios []confScenario            `json:"scenarios"`
}

type confErrorClass struct {
	Retryable bool `json:"retryable"`
}

type confScenario struct {
	Name             string            `json:"name"`
	Cluster          string            `json:"cluster"`
	ServerTOML       string            `json:"server_toml"`
	Client           map[string]int    `json:"client"`
	KnownDifferences map[string]string `json:"known_differences"`
	Steps            []confStep        `json:"steps"`
}

// confStep is one step; which fields matter depends on Op.
type confStep struct {
	Op              string          `json:"op"`
	Key             string          `json:"key"`
	Value           *string         `json:"value"`
	Size            int             `json:"size"`
	ExpectError     string          `json:"expect_error"`
	MaxElapsedMs    int64           `json:"max_elapsed_ms"`
	Expect          json.RawMessage `json:"expect"`
	Expected        json.RawMessage `json:"expected"`
	NewValue        json.RawMessage `json:"new_value"`
	ExpectSucceeded *bool           `json:"expect_succeeded"`
	ExpectCurrent   json.RawMessage `json:"expect_current"`
	Prefix          string          `json:"prefix"`
	Count           int             `json:"count"`
	PageSize        int             `json:"page_size"`
	ExpectKeys      int             `json:"expect_keys"`
	ExpectPages     int             `json:"expect_pages"`
	Name            string          `json:"name"`
	Start           string          `json:"start"`
	Watch           string          `json:"watch"`
	Events          []confEvent     `json:"events"`
	Error           string          `json:"error"`
	TimeoutS        float64         `json:"timeout_s"`
	Kind            string          `json:"kind"`
}

type confEvent struct {
	Type  string `json:"type"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// optString decodes an absent field or null as (nil, false), a string as
// (value, true).
func optString(t *testing.T, raw json.RawMessage) ([]byte, bool) {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("expected a string or null, got %s", raw)
	}
	return []byte(s), true
}

func loadConformance(t *testing.T) *confFile {
	t.Helper()
	path := filepath.Join("..", "..", "tests", "conformance", "scenarios.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the conformance scenarios: %v", err)
	}
	var f confFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if f.Format != 1 {
		t.Fatalf("%s: format %d; this driver reads format 1", path, f.Format)
	}
	return &f
}

// TestConformance runs every scenario of tests/conformance/scenarios.json:
// the "shared" ones on one 3-node cluster, the "fresh" ones each on a
// cluster of their own (faults, server settings).
func TestConformance(t *testing.T) {
	bin := serverBin(t)
	f := loadConformance(t)
	parent := t
	var shared *testCluster
	for _, sc := range f.Scenarios {
		if sc.Cluster == "shared" && sc.KnownDifferences["go"] == "" {
			// One cluster for every scenario that needs no fault or special
			// setting; it lives until the whole test ends.
			shared = startClusterExtra(t, 3, bin, nil, conformanceRaftTOML)
			break
		}
	}
	for _, sc := range f.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			if why, ok := sc.KnownDifferences["go"]; ok {
				t.Skipf("known difference: %s", why)
			}
			var c *testCluster
			switch sc.Cluster {
			case "shared":
				c = shared
				c.t = t // failures inside the harness fail this scenario
				defer func() { shared.t = parent }()
			case "fresh":
				c = startClusterExtra(t, 3, bin, nil, conformanceRaftTOML+"\n"+sc.ServerTOML)
			default:
				t.Fatalf("unknown cluster %q", sc.Cluster)
			}
			c.waitLeader(30 * time.Second)
			r := &confRun{t: t, c: c, f: f, sc: sc, ns: "conf/go/" + sc.Name + "/",
				revs: map[string]uint64{}, watches: map[string]*confWatch{}, stopped: -1, paused: -1}
			cl, err := NewClientWithOptions(c.endpoints())
			if err != nil {
				t.Fatal(err)
			}
			r.cl = cl
			defer func() {
				for _, w := range r.watches {
					w.cancel()
				}
				_ = cl.Close()
			}()
			for i, st := range sc.Steps {
				r.step = fmt.Sprintf("step %d (%s)", i+1, st.Op)
				r.run(st)
			}
		})
	}
}

type confRun struct {
	t       *testing.T
	c       *testCluster
	f       *confFile
	sc      confScenario
	cl      *Client
	ns      string
	step    string
	revs    map[string]uint64 // key -> revision of its last write here
	watches map[string]*confWatch
	stopped int // node index of the last killed/terminated node (-1: none)
	paused  int // node index of the paused node (-1: none)
}

type confWatch struct {
	ch     <-chan WatchEvent
	cancel context.CancelFunc
	start  uint64 // 0: "now"
	last   uint64 // revision of the last delivered event
	ended  *Error
}

func (r *confRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s: %s", r.step, fmt.Sprintf(format, args...))
}

func (r *confRun) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), confOpTimeout)
}

func batchKey(prefix string, i int) string { return fmt.Sprintf("%s%04d", prefix, i) }

func batchValue(i, size int) []byte {
	v := []byte(fmt.Sprintf("v%04d", i))
	for len(v) < size {
		v = append(v, 'x')
	}
	return v
}

// prefixEnd is the first key after every key starting with p (p ends in
// an ASCII byte here).
func prefixEnd(p string) []byte {
	b := []byte(p)
	b[len(b)-1]++
	return b
}

// checkError asserts err is the contract error name (and its retryable
// class, from the data's error table).
func (r *confRun) checkError(err error, name string) *Error {
	r.t.Helper()
	if err == nil {
		r.fatalf("expected %s, got success", name)
	}
	sentinel, ok := conformanceErrors[name]
	if !ok {
		r.fatalf("the Go driver has no row for error %q", name)
	}
	if !errors.Is(err, sentinel) {
		r.fatalf("expected %s, got %v", name, err)
	}
	if cls, ok := r.f.Errors[name]; ok && IsRetryable(err) != cls.Retryable {
		r.fatalf("%s: IsRetryable = %v, the error table says %v", name, IsRetryable(err), cls.Retryable)
	}
	var e *Error
	if !errors.As(err, &e) {
		r.fatalf("%v is not an *Error", err)
	}
	return e
}

func (r *confRun) run(st confStep) {
	t := r.t
	t.Helper()
	switch st.Op {
	case "put":
		val := []byte(nil)
		if st.Value != nil {
			val = []byte(*st.Value)
		} else {
			val = bytes.Repeat([]byte("x"), st.Size)
		}
		ctx, cancel := r.ctx()
		defer cancel()
		t0 := time.Now()
		rev, err := r.cl.Put(ctx, []byte(r.ns+st.Key), val)
		if st.ExpectError != "" {
			r.checkError(err, st.ExpectError)
			if el := time.Since(t0); st.MaxElapsedMs > 0 && el > time.Duration(st.MaxElapsedMs)*time.Millisecond {
				r.fatalf("%s took %v (retried?); the limit is %d ms", st.ExpectError, el, st.MaxElapsedMs)
			}
			return
		}
		if err != nil {
			r.fatalf("put %q: %v", st.Key, err)
		}
		r.revs[r.ns+st.Key] = rev
	case "put_many":
		for i := 0; i < st.Count; i++ {
			ctx, cancel := r.ctx()
			k := r.ns + batchKey(st.Prefix, i)
			rev, err := r.cl.Put(ctx, []byte(k), batchValue(i, st.Size))
			cancel()
			if err != nil {
				r.fatalf("put %q: %v", k, err)
			}
			r.revs[k] = rev
		}
	case "txn_put_many":
		var ops []Op
		for i := 0; i < st.Count; i++ {
			ops = append(ops, OpPut([]byte(r.ns+batchKey(st.Prefix, i)), batchValue(i, st.Size)))
		}
		ctx, cancel := r.ctx()
		defer cancel()
		t0 := time.Now()
		_, err := r.cl.Txn(ctx).Then(ops...).Commit()
		if st.ExpectError == "" {
			if err != nil {
				r.fatalf("txn: %v", err)
			}
			return
		}
		r.checkError(err, st.ExpectError)
		if el := time.Since(t0); st.MaxElapsedMs > 0 && el > time.Duration(st.MaxElapsedMs)*time.Millisecond {
			r.fatalf("%s took %v (retried?); the limit is %d ms", st.ExpectError, el, st.MaxElapsedMs)
		}
	case "get":
		ctx, cancel := r.ctx()
		defer cancel()
		kv, err := r.cl.Get(ctx, []byte(r.ns+st.Key))
		if err != nil {
			r.fatalf("get %q: %v", st.Key, err)
		}
		want, present := optString(t, st.Expect)
		switch {
		case !present && kv != nil:
			r.fatalf("get %q = %q, want absent", st.Key, kv.Value)
		case present && kv == nil:
			r.fatalf("get %q: absent, want %q", st.Key, want)
		case present && !bytes.Equal(kv.Value, want):
			r.fatalf("get %q = %q, want %q", st.Key, kv.Value, want)
		}
	case "cas":
		expected, hasExpected := optString(t, st.Expected)
		if hasExpected && expected == nil {
			expected = []byte{}
		}
		newValue, hasNew := optString(t, st.NewValue)
		if hasNew && newValue == nil {
			newValue = []byte{}
		}
		ctx, cancel := r.ctx()
		defer cancel()
		// No new value: CompareAndSwap with a nil new value (the contract:
		// deletes the key on success).
		res, err := r.cl.CompareAndSwap(ctx, []byte(r.ns+st.Key), expected, newValue)
		if err != nil {
			r.fatalf("cas %q: %v", st.Key, err)
		}
		if st.ExpectSucceeded != nil && res.Succeeded != *st.ExpectSucceeded {
			r.fatalf("cas %q: succeeded = %v, want %v", st.Key, res.Succeeded, *st.ExpectSucceeded)
		}
		if len(st.ExpectCurrent) > 0 {
			want, present := optString(t, st.ExpectCurrent)
			switch {
			case !present && res.Current != nil:
				r.fatalf("cas %q: current = %q, want absent", st.Key, res.Current.Value)
			case present && (res.Current == nil || !bytes.Equal(res.Current.Value, want)):
				r.fatalf("cas %q: current = %+v, want %q", st.Key, res.Current, want)
			}
		}
	case "range_pages":
		prefix := r.ns + st.Prefix
		end := prefixEnd(prefix)
		next := []byte(prefix)
		var keys []string
		pages := 0
		for {
			ctx, cancel := r.ctx()
			page, err := r.cl.Range(ctx, next, WithRangeEnd(end), WithLimit(st.PageSize))
			cancel()
			if err != nil {
				r.fatalf("range page %d: %v", pages+1, err)
			}
			pages++
			if want := uint64(st.ExpectKeys - len(keys)); page.Count != want {
				r.fatalf("page %d: count = %d, want %d (the keys from the page's start to the range end)", pages, page.Count, want)
			}
			if len(page.KVs) > st.PageSize {
				r.fatalf("page %d has %d pairs, more than the limit %d", pages, len(page.KVs), st.PageSize)
			}
			for _, kv := range page.KVs {
				keys = append(keys, string(kv.Key))
			}
			if !page.More {
				break
			}
			if pages > st.ExpectKeys+1 {
				r.fatalf("more than %d pages", pages)
			}
			next = page.NextKey
		}
		if pages != st.ExpectPages {
			r.fatalf("%d pages, want %d", pages, st.ExpectPages)
		}
		r.checkBatchKeys(keys, prefix, st.ExpectKeys)
	case "range_all":
		prefix := r.ns + st.Prefix
		ctx, cancel := r.ctx()
		defer cancel()
		var keys []string
		for kv, err := range r.cl.RangeAll(ctx, []byte(prefix), WithPrefix(), WithLimit(st.PageSize)) {
			if err != nil {
				r.fatalf("RangeAll: %v", err)
			}
			keys = append(keys, string(kv.Key))
		}
		r.checkBatchKeys(keys, prefix, st.ExpectKeys)
	case "watch":
		r.openWatch(st)
	case "expect_events":
		w := r.watch(st.Watch)
		for i, want := range st.Events {
			ev := r.nextEvent(w, st, fmt.Sprintf("event %d of %d", i+1, len(st.Events)))
			r.checkEvent(ev, want.Type, r.ns+want.Key, []byte(want.Value))
			w.last = ev.Revision()
		}
	case "expect_batch":
		w := r.watch(st.Watch)
		prefix := r.ns + st.Prefix
		for i := 0; i < st.Count; i++ {
			k := batchKey(prefix, i)
			if r.revs[k] < w.start {
				continue
			}
			ev := r.nextEvent(w, st, "event for "+k)
			r.checkEvent(ev, "put", k, batchValue(i, st.Size))
			w.last = ev.Revision()
		}
	case "drain_batch_until_end":
		w := r.watch(st.Watch)
		prefix := r.ns + st.Prefix
		i := 0
		deadline := time.Now().Add(confTimeout(st))
		for {
			select {
			case ev, ok := <-w.ch:
				if !ok {
					r.fatalf("the watch closed without an error after %d events", i)
				}
				if ev.Err != nil {
					e := r.checkError(ev.Err, st.Error)
					w.ended = e
					if i >= st.Count {
						r.fatalf("ended after all %d events", i)
					}
					if e.ResumeRevision <= w.last || e.ResumeRevision > r.revs[batchKey(prefix, i)] {
						r.fatalf("resume revision %d: want one in (%d, %d] (after the last delivered event, "+
							"at or before the first undelivered one)", e.ResumeRevision, w.last, r.revs[batchKey(prefix, i)])
					}
					t.Logf("%s: %d of %d events delivered, then %v", r.step, i, st.Count, ev.Err)
					return
				}
				if i >= st.Count {
					r.fatalf("an event after the batch: %+v", ev)
				}
				k := batchKey(prefix, i)
				r.checkEvent(ev, "put", k, batchValue(i, st.Size))
				w.last = ev.Revision()
				i++
				if i == st.Count {
					// Give the cancel a moment to arrive; if it does not,
					// the watcher never fell behind.
					select {
					case ev, ok := <-w.ch:
						if ok && ev.Err != nil {
							r.fatalf("%d events, then %v: the cut came after the whole batch", i, ev.Err)
						}
					case <-time.After(2 * time.Second):
					}
					r.fatalf("all %d events were delivered without %s: the watcher never fell behind", i, st.Error)
				}
			case <-time.After(time.Until(deadline)):
				r.fatalf("after %d events: nothing more within %v", i, confTimeout(st))
			}
		}
	case "expect_end":
		w := r.watch(st.Watch)
		select {
		case ev, ok := <-w.ch:
			if !ok {
				r.fatalf("the watch closed without an error")
			}
			if ev.Err == nil {
				r.fatalf("an event %+v, want the end with %s", ev, st.Error)
			}
			e := r.checkError(ev.Err, st.Error)
			w.ended = e
			if e.ResumeRevision <= w.last || e.ResumeRevision < w.start {
				r.fatalf("resume revision %d: want one past the last delivered event %d (start %d)", e.ResumeRevision, w.last, w.start)
			}
		case <-time.After(confTimeout(st)):
			r.fatalf("the watch did not end within %v", confTimeout(st))
		}
	case "close_client":
		if err := r.cl.Close(); err != nil {
			r.fatalf("Close: %v", err)
		}
	case "fault":
		r.fault(st.Kind)
	default:
		r.fatalf("unknown op %q", st.Op)
	}
}

func confTimeout(st confStep) time.Duration {
	if st.TimeoutS > 0 {
		return time.Duration(st.TimeoutS * float64(time.Second))
	}
	return 10 * time.Second
}

func (r *confRun) checkBatchKeys(keys []string, prefix string, n int) {
	r.t.Helper()
	if len(keys) != n {
		r.fatalf("%d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if want := batchKey(prefix, i); k != want {
			r.fatalf("key %d is %q, want %q (in order, each once)", i, k, want)
		}
	}
}

func (r *confRun) watch(name string) *confWatch {
	w, ok := r.watches[name]
	if !ok {
		r.fatalf("no watch %q", name)
	}
	return w
}

func (r *confRun) openWatch(st confStep) {
	var start uint64
	switch {
	case st.Start == "now" || st.Start == "":
	case strings.HasPrefix(st.Start, "rev_of:"):
		start = r.revs[r.ns+strings.TrimPrefix(st.Start, "rev_of:")]
	case strings.HasPrefix(st.Start, "resume_of:"):
		w := r.watch(strings.TrimPrefix(st.Start, "resume_of:"))
		if w.ended == nil {
			r.fatalf("watch has not ended")
		}
		start = w.ended.ResumeRevision
	case strings.HasPrefix(st.Start, "compact_of:"):
		w := r.watch(strings.TrimPrefix(st.Start, "compact_of:"))
		if w.ended == nil {
			r.fatalf("watch has not ended")
		}
		start = w.ended.CompactRevision
	default:
		r.fatalf("unknown start %q", st.Start)
	}
	if start == 0 && st.Start != "now" && st.Start != "" {
		r.fatalf("start %q resolved to revision 0", st.Start)
	}
	opts := []WatchOption{}
	if start > 0 {
		opts = append(opts, WithStartRevision(start))
	}
	if n, ok := r.sc.Client["watch_buffer"]; ok {
		opts = append(opts, WithWatchBuffer(n))
	}
	ctx, cancel := context.WithCancel(context.Background())
	key := r.ns + st.Key
	var ch <-chan WatchEvent
	var err error
	if st.Prefix != "" {
		ch, err = r.cl.WatchPrefix(ctx, []byte(r.ns+st.Prefix), opts...)
	} else {
		ch, err = r.cl.Watch(ctx, []byte(key), opts...)
	}
	w := &confWatch{ch: ch, cancel: cancel, start: start}
	r.watches[st.Name] = w
	if st.ExpectError == "" {
		if err != nil {
			cancel()
			r.fatalf("watch: %v", err)
		}
		return
	}
	// The error may come from the open call or as the first value.
	if err == nil {
		select {
		case ev, ok := <-ch:
			if !ok || ev.Err == nil {
				r.fatalf("want the watch to end with %s before any event, got %+v (open %v)", st.ExpectError, ev, ok)
			}
			err = ev.Err
		case <-time.After(confTimeout(st)):
			r.fatalf("the watch did not end with %s within %v", st.ExpectError, confTimeout(st))
		}
	}
	e := r.checkError(err, st.ExpectError)
	w.ended = e
	if st.ExpectError == "COMPACTED" && e.CompactRevision <= start {
		r.fatalf("compact revision %d, want one after the start %d", e.CompactRevision, start)
	}
	if e.ResumeRevision != start {
		r.fatalf("resume revision %d, want the start revision %d (nothing was delivered)", e.ResumeRevision, start)
	}
}

func (r *confRun) nextEvent(w *confWatch, st confStep, what string) WatchEvent {
	r.t.Helper()
	select {
	case ev, ok := <-w.ch:
		if !ok {
			r.fatalf("%s: the watch closed", what)
		}
		if ev.Err != nil {
			r.fatalf("%s: the watch ended with %v", what, ev.Err)
		}
		return ev
	case <-time.After(confTimeout(st)):
		r.fatalf("%s: nothing within %v", what, confTimeout(st))
	}
	return WatchEvent{}
}

func (r *confRun) checkEvent(ev WatchEvent, typ, key string, value []byte) {
	r.t.Helper()
	gotType := map[EventType]string{EventPut: "put", EventDelete: "delete"}[ev.Type]
	if gotType != typ || string(ev.KV.Key) != key || !bytes.Equal(ev.KV.Value, value) {
		r.fatalf("event %s %q (%d bytes, revision %d), want %s %q (%d bytes) — in order, each once",
			gotType, ev.KV.Key, len(ev.KV.Value), ev.Revision(), typ, key, len(value))
	}
	if rev, ok := r.revs[key]; ok && ev.Revision() != rev {
		r.fatalf("event for %q has revision %d, the put returned %d", key, ev.Revision(), rev)
	}
}

func (r *confRun) leader() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if i := r.c.leaderIndex(ctx, r.cl); i >= 0 {
		return i
	}
	return r.c.waitLeader(20 * time.Second)
}

func (r *confRun) fault(kind string) {
	switch kind {
	case "kill_leader":
		r.stopped = r.leader()
		r.c.kill(r.stopped)
	case "pause_leader":
		r.paused = r.leader()
		r.c.pause(r.paused)
	case "resume_paused":
		if r.paused < 0 {
			r.fatalf("resume_paused: no node was paused")
		}
		r.c.resume(r.paused)
	case "terminate_leader":
		r.stopped = r.leader()
		nd := r.c.nodes[r.stopped]
		r.c.signal(r.stopped, syscall.SIGTERM, false)
		select {
		case <-nd.done:
		case <-time.After(15 * time.Second):
			r.fatalf("node %d did not exit within 15 s of SIGTERM", nd.id)
		}
	case "restart_stopped":
		if r.stopped < 0 {
			r.fatalf("restart_stopped: no node was stopped")
		}
		r.c.start(r.stopped)
	default:
		r.fatalf("unknown fault %q", kind)
	}
	r.t.Logf("%s: %s (node index %d/%d)", r.step, kind, r.stopped, r.paused)
}
