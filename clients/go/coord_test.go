package dengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// memRange serves RangeRequests from a sorted key set the way the server
// does: [key, range_end), pages of at most min(limit, maxPage) pairs, more +
// next_key, count over the request's whole range.
type memRange struct {
	keys    []string
	maxPage int
	rev     uint64
}

func newMemRange(maxPage int, keys ...string) *memRange {
	keys = append([]string(nil), keys...)
	sort.Strings(keys)
	return &memRange{keys: keys, maxPage: maxPage, rev: 42}
}

func (m *memRange) serve(_ context.Context, r *enginev1.RangeRequest) (*enginev1.RangeResponse, error) {
	inRange := func(k string) bool {
		if k < string(r.GetKey()) {
			return false
		}
		end := r.GetRangeEnd()
		switch {
		case len(end) == 0:
			return k == string(r.GetKey())
		case len(end) == 1 && end[0] == 0:
			return true
		}
		return k < string(end)
	}
	page := m.maxPage
	if l := int(r.GetLimit()); l > 0 && l < page {
		page = l
	}
	resp := &enginev1.RangeResponse{Header: &enginev1.ResponseHeader{Revision: m.rev}}
	for _, k := range m.keys {
		if !inRange(k) {
			continue
		}
		resp.Count++
		if r.GetCountOnly() {
			continue
		}
		if len(resp.Kvs) == page {
			if !resp.More {
				resp.More = true
				resp.NextKey = []byte(k)
			}
			continue
		}
		kv := &enginev1.KeyValue{Key: []byte(k), ModRevision: 7, Version: 1}
		if !r.GetKeysOnly() {
			kv.Value = []byte("v:" + k)
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	return resp, nil
}

func rangeReqs(n *fakeNode) []*enginev1.RangeRequest {
	var out []*enginev1.RangeRequest
	for _, m := range n.recorded() {
		if r, ok := m.(*enginev1.RangeRequest); ok {
			out = append(out, r)
		}
	}
	return out
}

func TestPrefixEnd(t *testing.T) {
	cases := []struct{ in, want string }{
		{"a", "b"},
		{"jobs/", "jobs0"},
		{"a\xff", "b"},
		{"a\xfe\xff\xff", "a\xff"},
		{"\xff\xff", "\x00"},
		{"", "\x00"},
	}
	for _, tc := range cases {
		in := []byte(tc.in)
		if got := PrefixEnd(in); string(got) != tc.want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if string(in) != tc.in {
			t.Errorf("PrefixEnd modified its argument: %q", in)
		}
	}
}

func TestRangePageAndOptions(t *testing.T) {
	var keys []string
	for i := 0; i < 25; i++ {
		keys = append(keys, fmt.Sprintf("p/%02d", i))
	}
	store := newMemRange(MaxRangeLimit, append(append([]string(nil), keys...), "o", "p0", "q")...)
	node := startFake(t, func(n *fakeNode) { n.rng = store.serve })
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)

	page, err := c.Range(ctx, []byte("p/"), WithPrefix(), WithLimit(10), WithConsistency(Lease))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.KVs) != 10 || !page.More || page.Count != 25 || string(page.NextKey) != "p/10" || page.Revision != 42 {
		t.Fatalf("first page: %d kvs more=%v count=%d next=%q rev=%d", len(page.KVs), page.More, page.Count, page.NextKey, page.Revision)
	}
	if string(page.KVs[0].Key) != "p/00" || string(page.KVs[0].Value) != "v:p/00" || page.KVs[0].ModRevision != 7 {
		t.Fatalf("first kv: %+v", page.KVs[0])
	}
	next, err := c.Range(ctx, page.NextKey, WithRangeEnd(PrefixEnd([]byte("p/"))), WithLimit(10))
	if err != nil || string(next.KVs[0].Key) != "p/10" || next.Count != 15 {
		t.Fatalf("next page: %+v, %v", next, err)
	}
	// Single key, keys only, count only, from key.
	one, err := c.Range(ctx, []byte("p/03"), WithKeysOnly())
	if err != nil || len(one.KVs) != 1 || one.KVs[0].Value != nil || one.More {
		t.Fatalf("single key keys-only: %+v, %v", one, err)
	}
	cnt, err := c.Range(ctx, []byte("p/"), WithPrefix(), WithCountOnly())
	if err != nil || cnt.Count != 25 || len(cnt.KVs) != 0 {
		t.Fatalf("count only: %+v, %v", cnt, err)
	}
	from, err := c.Range(ctx, []byte("p0"), WithFromKey())
	if err != nil || from.Count != 2 {
		t.Fatalf("from key: %+v, %v", from, err)
	}
	all, err := c.Range(ctx, nil, WithPrefix())
	if err != nil || all.Count != 28 {
		t.Fatalf("empty prefix: %+v, %v", all, err)
	}

	reqs := rangeReqs(node)
	if len(reqs) != 6 {
		t.Fatalf("%d range requests", len(reqs))
	}
	if string(reqs[0].RangeEnd) != "p0" || reqs[0].Limit != 10 || reqs[0].Consistency != enginev1.Consistency_LEASE {
		t.Fatalf("prefix request: %v", reqs[0])
	}
	if reqs[1].Consistency != enginev1.Consistency_LINEARIZABLE {
		t.Fatalf("default consistency: %v", reqs[1])
	}
	if len(reqs[2].RangeEnd) != 0 || !reqs[2].KeysOnly {
		t.Fatalf("single key request: %v", reqs[2])
	}
	if !reqs[3].CountOnly || !bytes.Equal(reqs[4].RangeEnd, []byte{0}) {
		t.Fatalf("count-only / from-key requests: %v / %v", reqs[3], reqs[4])
	}
	if len(reqs[5].Key) != 0 || !bytes.Equal(reqs[5].RangeEnd, []byte{0}) {
		t.Fatalf("all keys request: %v", reqs[5])
	}
}

func TestRangeBadInputNeverSent(t *testing.T) {
	node := startFake(t, nil)
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)
	bad := map[string]func() error{
		"empty single key": func() error { _, err := c.Range(ctx, nil); return err },
		"end before key":   func() error { _, err := c.Range(ctx, []byte("b"), WithRangeEnd([]byte("a"))); return err },
		"end equals key":   func() error { _, err := c.Range(ctx, []byte("b"), WithRangeEnd([]byte("b"))); return err },
		"empty end":        func() error { _, err := c.Range(ctx, []byte("b"), WithRangeEnd(nil)); return err },
		"negative limit":   func() error { _, err := c.Range(ctx, []byte("b"), WithLimit(-1)); return err },
		"prefix+fromkey":   func() error { _, err := c.Range(ctx, []byte("b"), WithPrefix(), WithFromKey()); return err },
		"prevkv on range":  func() error { _, err := c.Range(ctx, []byte("b"), WithPrevKV()); return err },
		"lease on range":   func() error { _, err := c.Range(ctx, []byte("b"), WithLease(3)); return err },
		"bad consistency":  func() error { _, err := c.Range(ctx, []byte("b"), WithConsistency(Consistency(9))); return err },
		"limit on delete":  func() error { _, err := c.DeleteRange(ctx, []byte("b"), WithLimit(3)); return err },
		"prefix on put":    func() error { _, err := c.Put(ctx, []byte("b"), nil, WithPrefix()); return err },
		"countonly in all": func() error {
			for _, err := range c.RangeAll(ctx, []byte("b"), WithPrefix(), WithCountOnly()) {
				return err
			}
			return nil
		},
	}
	for name, f := range bad {
		err := f()
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: want ErrInvalidArgument, got %v", name, err)
		}
	}
	if n := node.count(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
	var e *Error
	_, err := c.Range(ctx, []byte("b"), WithPrevKV())
	if !errors.As(err, &e) || !bytes.Contains([]byte(e.Message), []byte("WithPrevKV does not apply to Range")) {
		t.Fatalf("message does not say which option: %v", err)
	}
}

// RangeAll and ScanPrefix walk every page: every key exactly once, in order,
// even when the server's page (its byte budget) is smaller than asked.
func TestRangeAllWalksEveryPage(t *testing.T) {
	var keys []string
	for i := 0; i < 103; i++ {
		keys = append(keys, fmt.Sprintf("p/%03d", i))
	}
	store := newMemRange(10, append(append([]string(nil), keys...), "p0", "a")...) // server pages of at most 10
	node := startFake(t, func(n *fakeNode) { n.rng = store.serve })
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)

	var got []string
	for kv, err := range c.RangeAll(ctx, []byte("p/"), WithPrefix(), WithLimit(7), WithConsistency(Eventual)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(kv.Key))
	}
	if fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Fatalf("RangeAll saw %d keys %v", len(got), got)
	}
	reqs := rangeReqs(node)
	if len(reqs) != 15 { // ceil(103/7)
		t.Fatalf("%d pages read, want 15", len(reqs))
	}
	for i, r := range reqs {
		if r.Limit != 7 || string(r.RangeEnd) != "p0" || r.Consistency != enginev1.Consistency_EVENTUAL {
			t.Fatalf("page %d request %v", i, r)
		}
	}

	// Breaking out stops reading pages.
	before := node.count()
	n := 0
	for _, err := range c.RangeAll(ctx, []byte("p/"), WithPrefix()) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 15 {
			break
		}
	}
	if pages := node.count() - before; pages != 2 {
		t.Fatalf("breaking after 15 keys read %d pages, want 2", pages)
	}

	// Pages: revisions and counts.
	pages := 0
	for page, err := range c.RangePages(ctx, []byte("p/"), WithPrefix()) {
		if err != nil {
			t.Fatal(err)
		}
		if page.Revision != 42 || (page.More != (len(page.NextKey) > 0)) {
			t.Fatalf("page %+v", page)
		}
		pages++
	}
	if pages != 11 {
		t.Fatalf("%d pages of at most 10 for 103 keys", pages)
	}

	// ScanPrefix: limit 0 reads everything, a limit stops with More.
	scan, err := c.ScanPrefix(ctx, []byte("p/"), 0)
	if err != nil || len(scan.KVs) != 103 || scan.More || scan.Revision != 42 {
		t.Fatalf("ScanPrefix(0): %d kvs more=%v, %v", len(scan.KVs), scan.More, err)
	}
	scan, err = c.ScanPrefix(ctx, []byte("p/"), 25)
	if err != nil || len(scan.KVs) != 25 || !scan.More || string(scan.KVs[24].Key) != "p/024" {
		t.Fatalf("ScanPrefix(25): %d kvs more=%v, %v", len(scan.KVs), scan.More, err)
	}
	scan, err = c.ScanPrefix(ctx, []byte("p/"), 103)
	if err != nil || len(scan.KVs) != 103 || scan.More {
		t.Fatalf("ScanPrefix(103): %d kvs more=%v, %v", len(scan.KVs), scan.More, err)
	}
}

func TestRangeAllReportsErrorsAndBadCursor(t *testing.T) {
	var calls atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.rng = func(_ context.Context, r *enginev1.RangeRequest) (*enginev1.RangeResponse, error) {
			if calls.Add(1) == 1 {
				return &enginev1.RangeResponse{Kvs: []*enginev1.KeyValue{{Key: []byte("a")}}, More: true, NextKey: []byte("b")}, nil
			}
			return nil, dengineErr(codes.PermissionDenied, "PERMISSION_DENIED", "no", nil)
		}
	})
	c := newTestClient(t, []string{node.addr})
	var keys []string
	var errs []error
	for kv, err := range c.RangeAll(testCtx(t), []byte("a"), WithFromKey()) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, string(kv.Key))
	}
	if len(keys) != 1 || len(errs) != 1 || !errors.Is(errs[0], ErrPermissionDenied) {
		t.Fatalf("keys %v errs %v", keys, errs)
	}

	// A server answering more without a next key after the request's key
	// would make the walk loop: refused.
	loop := startFake(t, func(n *fakeNode) {
		n.rng = func(_ context.Context, r *enginev1.RangeRequest) (*enginev1.RangeResponse, error) {
			return &enginev1.RangeResponse{More: true, NextKey: r.GetKey()}, nil
		}
	})
	c2 := newTestClient(t, []string{loop.addr})
	for _, err := range c2.RangeAll(testCtx(t), []byte("a"), WithFromKey()) {
		if !errors.Is(err, ErrInternal) {
			t.Fatalf("looping cursor: %v", err)
		}
	}
	if n := loop.count(); n != 1 {
		t.Fatalf("looping cursor followed %d times", n)
	}
}

func TestDeleteRangeRetriesWithSameWriteID(t *testing.T) {
	var calls atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.delRng = func(_ context.Context, r *enginev1.DeleteRangeRequest) (*enginev1.DeleteRangeResponse, error) {
			if calls.Add(1) == 1 {
				return nil, status.Error(codes.Unavailable, "connection reset")
			}
			return &enginev1.DeleteRangeResponse{
				Deleted:          3,
				PrevKvs:          []*enginev1.KeyValue{{Key: []byte("d/1"), Value: []byte("x"), Lease: 5}},
				PrevKvsTruncated: true,
				Revision:         77,
			}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)
	res, err := c.DeleteRange(ctx, []byte("d/"), WithPrefix(), WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 3 || res.Revision != 77 || !res.PrevKVsTruncated || len(res.PrevKVs) != 1 ||
		string(res.PrevKVs[0].Value) != "x" || res.PrevKVs[0].Lease != 5 {
		t.Fatalf("DeleteRange = %+v", res)
	}
	if _, err := c.DeleteRange(ctx, []byte("d/1")); err != nil {
		t.Fatal(err)
	}
	var reqs []*enginev1.DeleteRangeRequest
	for _, m := range node.recorded() {
		reqs = append(reqs, m.(*enginev1.DeleteRangeRequest))
	}
	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	if !proto.Equal(reqs[0].WriteId, reqs[1].WriteId) || reqs[0].WriteId.GetClientId() == 0 {
		t.Fatalf("retry changed the WriteId: %v then %v", reqs[0].WriteId, reqs[1].WriteId)
	}
	if proto.Equal(reqs[1].WriteId, reqs[2].WriteId) {
		t.Fatal("two deletes share a WriteId")
	}
	if string(reqs[0].Key) != "d/" || string(reqs[0].RangeEnd) != "d0" || !reqs[0].PrevKv {
		t.Fatalf("prefix delete request %v", reqs[0])
	}
	if len(reqs[2].RangeEnd) != 0 || reqs[2].PrevKv {
		t.Fatalf("single delete request %v", reqs[2])
	}
}

func TestTxnEncodingResultsAndExactlyOnce(t *testing.T) {
	var calls atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.txn = func(_ context.Context, r *enginev1.TxnRequest) (*enginev1.TxnResponse, error) {
			if calls.Add(1) == 1 {
				// The first attempt was applied but its answer got lost.
				return nil, status.Error(codes.DeadlineExceeded, "timeout")
			}
			return &enginev1.TxnResponse{
				Succeeded: true,
				Revision:  90,
				Replayed:  true,
				Results: []*enginev1.TxnOpResult{
					{Result: &enginev1.TxnOpResult_Put{Put: &enginev1.PutResponse{Revision: 90}}},
					{Result: &enginev1.TxnOpResult_Range{Range: &enginev1.RangeResponse{Count: 1, Kvs: []*enginev1.KeyValue{{Key: []byte("b"), Value: []byte("2")}}}}},
					{Result: &enginev1.TxnOpResult_DeleteRange{DeleteRange: &enginev1.DeleteRangeResponse{Deleted: 2, Revision: 90}}},
				},
			}, nil
		}
	})
	c := newTestClient(t, []string{node.addr})
	res, err := c.Txn(testCtx(t)).
		If(CompareValue([]byte("a"), Equal, []byte("1")),
			CompareVersion([]byte("b"), NotEqual, 0),
			CompareCreateRevision([]byte("c"), Less, 10),
			CompareModRevision([]byte("d"), Greater, 20),
			CompareLease([]byte("e"), Equal, 7)).
		Then(OpPut([]byte("a"), []byte("2"), WithLease(7)), OpGet([]byte("b")), OpDeleteRange([]byte("x/"), WithPrefix(), WithPrevKV())).
		Else(OpRange([]byte("a"), WithRangeEnd([]byte("z")), WithLimit(5), WithKeysOnly()), OpDelete([]byte("a"))).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || res.Revision != 90 || !res.Replayed || len(res.Results) != 3 {
		t.Fatalf("TxnResult %+v", res)
	}
	if res.Results[0].Put == nil || res.Results[0].Put.Revision != 90 || res.Results[0].Range != nil {
		t.Fatalf("put result %+v", res.Results[0])
	}
	if r := res.Results[1].Range; r == nil || r.Count != 1 || string(r.KVs[0].Value) != "2" {
		t.Fatalf("range result %+v", res.Results[1])
	}
	if d := res.Results[2].DeleteRange; d == nil || d.Deleted != 2 {
		t.Fatalf("delete result %+v", res.Results[2])
	}

	msgs := node.recorded()
	if len(msgs) != 2 {
		t.Fatalf("%d attempts", len(msgs))
	}
	first, second := msgs[0].(*enginev1.TxnRequest), msgs[1].(*enginev1.TxnRequest)
	if first.WriteId.GetClientId() == 0 || !proto.Equal(first.WriteId, second.WriteId) {
		t.Fatalf("retry must reuse the WriteId: %v then %v", first.WriteId, second.WriteId)
	}
	want := &enginev1.TxnRequest{
		Compare: []*enginev1.Compare{
			{Op: enginev1.Compare_EQUAL, Key: []byte("a"), Target: &enginev1.Compare_Value{Value: []byte("1")}},
			{Op: enginev1.Compare_NOT_EQUAL, Key: []byte("b"), Target: &enginev1.Compare_Version{Version: 0}},
			{Op: enginev1.Compare_LESS, Key: []byte("c"), Target: &enginev1.Compare_CreateRevision{CreateRevision: 10}},
			{Op: enginev1.Compare_GREATER, Key: []byte("d"), Target: &enginev1.Compare_ModRevision{ModRevision: 20}},
			{Op: enginev1.Compare_EQUAL, Key: []byte("e"), Target: &enginev1.Compare_Lease{Lease: 7}},
		},
		Success: []*enginev1.TxnOp{
			{Op: &enginev1.TxnOp_Put{Put: &enginev1.PutRequest{Key: []byte("a"), Value: []byte("2"), Lease: 7}}},
			{Op: &enginev1.TxnOp_Range{Range: &enginev1.RangeRequest{Key: []byte("b")}}},
			{Op: &enginev1.TxnOp_DeleteRange{DeleteRange: &enginev1.DeleteRangeRequest{Key: []byte("x/"), RangeEnd: []byte("x0"), PrevKv: true}}},
		},
		Failure: []*enginev1.TxnOp{
			{Op: &enginev1.TxnOp_Range{Range: &enginev1.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Limit: 5, KeysOnly: true}}},
			{Op: &enginev1.TxnOp_DeleteRange{DeleteRange: &enginev1.DeleteRangeRequest{Key: []byte("a")}}},
		},
		WriteId: first.WriteId,
	}
	if !proto.Equal(first, want) {
		t.Fatalf("txn request\n got %v\nwant %v", first, want)
	}
}

func TestTxnBadInputNeverSent(t *testing.T) {
	node := startFake(t, nil)
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)
	many := make([]Op, MaxTxnOps+1)
	for i := range many {
		many[i] = OpPut([]byte(fmt.Sprint("k", i)), nil)
	}
	manyCmps := make([]Cmp, MaxTxnOps+1)
	for i := range manyCmps {
		manyCmps[i] = CompareVersion([]byte("k"), Equal, 0)
	}
	cases := map[string]*Txn{
		"129 then ops":     c.Txn(ctx).Then(many...),
		"129 else ops":     c.Txn(ctx).Else(many...),
		"129 compares":     c.Txn(ctx).If(manyCmps...),
		"empty put key":    c.Txn(ctx).Then(OpPut(nil, []byte("v"))),
		"bad operator":     c.Txn(ctx).If(CompareValue([]byte("k"), CompareOp(9), nil)),
		"empty cmp key":    c.Txn(ctx).If(CompareModRevision(nil, Equal, 1)),
		"zero Op":          c.Txn(ctx).Then(Op{}),
		"zero Cmp":         c.Txn(ctx).If(Cmp{}),
		"bad range in op":  c.Txn(ctx).Else(OpRange([]byte("b"), WithRangeEnd([]byte("a")))),
		"consistency op":   c.Txn(ctx).Else(OpRange([]byte("b"), WithConsistency(Lease))),
		"prevkv on put op": c.Txn(ctx).Then(OpPut([]byte("b"), nil, WithPrevKV())),
	}
	for name, txn := range cases {
		if _, err := txn.Commit(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: want ErrInvalidArgument, got %v", name, err)
		}
	}
	if n := node.count(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
	_, err := c.Txn(ctx).Then(many...).Commit()
	var e *Error
	if !errors.As(err, &e) || e.Metadata["limit"] != "128" || e.Metadata["field"] != "then" {
		t.Fatalf("op limit error %+v", err)
	}
	_, err = c.Txn(ctx).Then(OpPut([]byte("ok"), nil), OpPut(nil, nil)).Commit()
	if !errors.As(err, &e) || !bytes.HasPrefix([]byte(e.Message), []byte("then[1]: ")) {
		t.Fatalf("op error does not name the op: %v", err)
	}
	// A txn with 128 ops per branch is fine (the server decides).
	okNode := startFake(t, func(n *fakeNode) {
		n.txn = func(context.Context, *enginev1.TxnRequest) (*enginev1.TxnResponse, error) {
			return &enginev1.TxnResponse{Succeeded: false, Revision: 3}, nil
		}
	})
	c2 := newTestClient(t, []string{okNode.addr})
	res, err := c2.Txn(ctx).If(manyCmps[:MaxTxnOps]...).Then(many[:MaxTxnOps]...).Else(many[:MaxTxnOps]...).Commit()
	if err != nil || res.Succeeded || res.Revision != 3 {
		t.Fatalf("128-op txn: %+v, %v", res, err)
	}
}

func TestTxnFollowsLeaderHint(t *testing.T) {
	leader := startFake(t, func(n *fakeNode) {
		n.txn = func(context.Context, *enginev1.TxnRequest) (*enginev1.TxnResponse, error) {
			return &enginev1.TxnResponse{Succeeded: true, Revision: 5}, nil
		}
	})
	follower := startFake(t, func(n *fakeNode) {
		n.txn = func(context.Context, *enginev1.TxnRequest) (*enginev1.TxnResponse, error) {
			return nil, notLeader("1", leader.addr)
		}
	})
	c := newTestClient(t, []string{follower.addr})
	res, err := c.Txn(testCtx(t)).Then(OpPut([]byte("k"), []byte("v"))).Commit()
	if err != nil || !res.Succeeded {
		t.Fatalf("%+v, %v", res, err)
	}
	a := follower.recorded()[0].(*enginev1.TxnRequest)
	b := leader.recorded()[0].(*enginev1.TxnRequest)
	if !proto.Equal(a.WriteId, b.WriteId) {
		t.Fatal("redirected txn changed its WriteId")
	}
}

func TestLeaseCalls(t *testing.T) {
	var grants atomic.Int32
	node := startFake(t, func(n *fakeNode) {
		n.grant = func(_ context.Context, r *enginev1.LeaseGrantRequest) (*enginev1.LeaseGrantResponse, error) {
			if grants.Add(1) == 1 {
				return nil, status.Error(codes.Unavailable, "reset")
			}
			id := r.GetId()
			if id == 0 {
				id = 1001
			}
			return &enginev1.LeaseGrantResponse{Id: id, TtlMs: r.GetTtlMs(), Revision: 8}, nil
		}
		n.revoke = func(_ context.Context, r *enginev1.LeaseRevokeRequest) (*enginev1.LeaseRevokeResponse, error) {
			if r.GetId() != 1001 {
				return nil, dengineErr(codes.NotFound, "LEASE_NOT_FOUND", "lease not found", map[string]string{"lease_id": fmt.Sprint(r.GetId())})
			}
			return &enginev1.LeaseRevokeResponse{Deleted: 4, Revision: 9}, nil
		}
		n.renew = func(_ context.Context, r *enginev1.LeaseKeepAliveRequest) (*enginev1.LeaseKeepAliveResponse, error) {
			return &enginev1.LeaseKeepAliveResponse{Id: r.GetId(), TtlMs: 3000}, nil
		}
		n.ttl = func(_ context.Context, r *enginev1.LeaseTimeToLiveRequest) (*enginev1.LeaseTimeToLiveResponse, error) {
			resp := &enginev1.LeaseTimeToLiveResponse{Id: r.GetId(), GrantedTtlMs: 3000, RemainingMs: 2500, KeyCount: 2}
			if r.GetKeys() {
				resp.Keys = [][]byte{[]byte("a"), []byte("b")}
			}
			return resp, nil
		}
		n.list = func(context.Context, *enginev1.LeaseListRequest) (*enginev1.LeaseListResponse, error) {
			return &enginev1.LeaseListResponse{Leases: []*enginev1.LeaseStatus{{Id: 1001, GrantedTtlMs: 3000}, {Id: 5, GrantedTtlMs: 10}}}, nil
		}
		n.put = okPut(12)
	})
	c := newTestClient(t, []string{node.addr})
	ctx := testCtx(t)

	g, err := c.Grant(ctx, 2500*time.Microsecond)
	if err != nil || g.ID != 1001 || g.TTL != 3*time.Millisecond || g.Revision != 8 {
		t.Fatalf("Grant = %+v, %v", g, err)
	}
	if g2, err := c.Grant(ctx, time.Second, WithLeaseID(77)); err != nil || g2.ID != 77 {
		t.Fatalf("Grant with id = %+v, %v", g2, err)
	}
	if _, err := c.Put(ctx, []byte("a"), []byte("1"), WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	if ttl, err := c.Renew(ctx, g.ID); err != nil || ttl != 3*time.Second {
		t.Fatalf("Renew = %v, %v", ttl, err)
	}
	tl, err := c.TimeToLive(ctx, g.ID, true)
	if err != nil || tl.GrantedTTL != 3*time.Second || tl.Remaining != 2500*time.Millisecond || len(tl.Keys) != 2 || tl.KeyCount != 2 {
		t.Fatalf("TimeToLive = %+v, %v", tl, err)
	}
	ls, err := c.Leases(ctx)
	if err != nil || len(ls) != 2 || ls[0].ID != 1001 || ls[1].GrantedTTL != 10*time.Millisecond {
		t.Fatalf("Leases = %+v, %v", ls, err)
	}
	rv, err := c.Revoke(ctx, g.ID)
	if err != nil || rv.Deleted != 4 || rv.Revision != 9 {
		t.Fatalf("Revoke = %+v, %v", rv, err)
	}
	_, err = c.Revoke(ctx, 55)
	var e *Error
	if !errors.Is(err, ErrLeaseNotFound) || IsRetryable(err) || !errors.As(err, &e) || e.Metadata["lease_id"] != "55" {
		t.Fatalf("revoking an unknown lease: %v", err)
	}
	for name, err := range map[string]error{
		"ttl 0":          func() error { _, err := c.Grant(ctx, 0); return err }(),
		"ttl > 1 year":   func() error { _, err := c.Grant(ctx, MaxLeaseTTL+time.Millisecond); return err }(),
		"revoke 0":       func() error { _, err := c.Revoke(ctx, 0); return err }(),
		"renew 0":        func() error { _, err := c.Renew(ctx, 0); return err }(),
		"ttl of 0":       func() error { _, err := c.TimeToLive(ctx, 0, false); return err }(),
		"keepalive of 0": func() error { _, err := c.KeepAlive(ctx, 0); return err }(),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: want ErrInvalidArgument, got %v", name, err)
		}
	}

	var grantReqs []*enginev1.LeaseGrantRequest
	var putReq *enginev1.PutRequest
	var ttlReq *enginev1.LeaseTimeToLiveRequest
	for _, m := range node.recorded() {
		switch r := m.(type) {
		case *enginev1.LeaseGrantRequest:
			grantReqs = append(grantReqs, r)
		case *enginev1.PutRequest:
			putReq = r
		case *enginev1.LeaseTimeToLiveRequest:
			ttlReq = r
		}
	}
	if len(grantReqs) != 3 || grantReqs[0].TtlMs != 3 || grantReqs[2].Id != 77 || grantReqs[2].TtlMs != 1000 {
		t.Fatalf("grant requests %v", grantReqs)
	}
	if grantReqs[0].WriteId.GetClientId() == 0 || !proto.Equal(grantReqs[0].WriteId, grantReqs[1].WriteId) {
		t.Fatalf("grant retry must keep its WriteId: %v / %v", grantReqs[0].WriteId, grantReqs[1].WriteId)
	}
	if putReq.GetLease() != 1001 || putReq.GetTtlMs() != 0 {
		t.Fatalf("put with lease sent %v", putReq)
	}
	if !ttlReq.GetKeys() {
		t.Fatal("withKeys not sent")
	}
}

// keepAliveServer answers every keepalive of a stream with ttl, after
// delay, and counts the renewals; stop(n) returns an error to end the
// stream instead of answering the (n+1)th request (nil: never).
type kaScript struct {
	ttl      time.Duration
	renewals atomic.Int32
	stop     func(i int) error
}

func (s *kaScript) serve(n *fakeNode, st enginev1.Lease_LeaseKeepAliveServer) error {
	for i := 0; ; i++ {
		r, err := n.recvKeepAlive(st)
		if err != nil {
			return nil
		}
		if s.stop != nil {
			if err := s.stop(i); err != nil {
				return err
			}
		}
		s.renewals.Add(1)
		if err := st.Send(&enginev1.LeaseKeepAliveResponse{Id: r.GetId(), TtlMs: uint64(s.ttl / time.Millisecond)}); err != nil {
			return nil
		}
	}
}

func TestKeepAliveRenewsAndFollowsNewLeader(t *testing.T) {
	newLeader := &kaScript{ttl: 300 * time.Millisecond}
	var gone atomic.Bool
	newLeader.stop = func(int) error {
		if gone.Load() {
			return dengineErr(codes.NotFound, "LEASE_NOT_FOUND", "lease 9 not found", map[string]string{"lease_id": "9"})
		}
		return nil
	}
	b := startFake(t, func(n *fakeNode) { n.keepAlive = newLeader.serve })
	oldLeader := &kaScript{ttl: 300 * time.Millisecond}
	oldLeader.stop = func(i int) error {
		if i >= 3 { // after 3 renewals it loses the leadership
			return notLeader("2", b.addr)
		}
		return nil
	}
	a := startFake(t, func(n *fakeNode) { n.keepAlive = oldLeader.serve })

	c := newTestClient(t, []string{a.addr})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	start := time.Now()
	ka, err := c.KeepAlive(ctx, 9)
	if err != nil {
		t.Fatal(err)
	}
	if ka.ID() != 9 || ka.TTL() != 300*time.Millisecond || ka.Deadline().Before(start.Add(300*time.Millisecond)) {
		t.Fatalf("after the first renewal: ttl %v deadline %v", ka.TTL(), ka.Deadline())
	}
	// Alive for 3 TTLs, across the leader change.
	select {
	case <-ka.Done():
		t.Fatalf("keepalive stopped: %v", ka.Err())
	case <-time.After(900 * time.Millisecond):
	}
	if oldLeader.renewals.Load() != 3 || newLeader.renewals.Load() < 4 {
		t.Fatalf("renewals: old leader %d (want 3), new leader %d (want >= 4)", oldLeader.renewals.Load(), newLeader.renewals.Load())
	}
	// Every third of the TTL: about 9 renewals in 900ms, not a flood.
	if total := oldLeader.renewals.Load() + newLeader.renewals.Load(); total > 14 {
		t.Fatalf("%d renewals in 900ms with a 300ms TTL", total)
	}
	if ka.Err() != nil {
		t.Fatalf("Err while running: %v", ka.Err())
	}
	// The lease disappears on the server: reported at the next renewal.
	gone.Store(true)
	select {
	case <-ka.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("loss not reported")
	}
	if err := ka.Err(); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Err = %v, want ErrLeaseNotFound", err)
	}
}

func TestKeepAliveReportsExpiryWhenRenewalsFail(t *testing.T) {
	var mu sync.Mutex
	hang := false
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	script := &kaScript{ttl: 400 * time.Millisecond}
	script.stop = func(int) error {
		mu.Lock()
		h := hang
		mu.Unlock()
		if h {
			<-release // never answer: the leader is partitioned away
			return status.Error(codes.Unavailable, "test over")
		}
		return nil
	}
	node := startFake(t, func(n *fakeNode) { n.keepAlive = script.serve })
	c := newTestClient(t, []string{node.addr}, WithRequestTimeout(5*time.Second))
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	ka, err := c.KeepAlive(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	hang = true
	mu.Unlock()
	deadline := ka.Deadline()
	select {
	case <-ka.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("no loss reported 3s after renewals stopped (TTL 400ms)")
	}
	lostAt := time.Now()
	if err := ka.Err(); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Err = %v, want ErrLeaseExpired", err)
	}
	// Reported once the guaranteed lifetime ran out, not before, and
	// without waiting for the 5s request timeout.
	if lostAt.Before(ka.Deadline()) || ka.Deadline().Sub(deadline) > 400*time.Millisecond || lostAt.Sub(ka.Deadline()) > 300*time.Millisecond {
		t.Fatalf("lost at %v, deadline %v (first seen %v)", lostAt, ka.Deadline(), deadline)
	}
}

func TestKeepAliveStartAndStop(t *testing.T) {
	missing := startFake(t, func(n *fakeNode) {
		n.keepAlive = func(n *fakeNode, st enginev1.Lease_LeaseKeepAliveServer) error {
			if _, err := n.recvKeepAlive(st); err != nil {
				return nil
			}
			return dengineErr(codes.NotFound, "LEASE_NOT_FOUND", "lease not found", nil)
		}
	})
	c := newTestClient(t, []string{missing.addr})
	if _, err := c.KeepAlive(testCtx(t), 4); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("KeepAlive of a missing lease: %v", err)
	}

	script := &kaScript{ttl: 150 * time.Millisecond}
	node := startFake(t, func(n *fakeNode) { n.keepAlive = script.serve })
	c2 := newTestClient(t, []string{node.addr})
	ctx, cancel := context.WithCancel(testCtx(t))
	ka, err := c2.KeepAlive(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case <-ka.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("keepalive did not stop on cancel")
	}
	if ka.Err() != nil {
		t.Fatalf("cancelled keepalive reports %v", ka.Err())
	}
	// A renewal already on the wire when ctx was cancelled may still reach
	// the server; after that, none.
	time.Sleep(100 * time.Millisecond)
	n := script.renewals.Load()
	time.Sleep(300 * time.Millisecond)
	if script.renewals.Load() != n {
		t.Fatal("renewals continued after cancel")
	}

	// Closing the client ends a keepalive with ErrClosed.
	c3 := newTestClient(t, []string{node.addr})
	ka, err = c3.KeepAlive(testCtx(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	_ = c3.Close()
	select {
	case <-ka.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("keepalive did not stop on Close")
	}
	if !errors.Is(ka.Err(), ErrClosed) {
		t.Fatalf("Err after Close = %v", ka.Err())
	}
}

// KeepAlive finds the leader like any call: past a dead endpoint and a
// follower without a leader hint.
func TestKeepAliveFindsLeader(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	hintless := startFake(t, func(n *fakeNode) {
		n.keepAlive = func(n *fakeNode, st enginev1.Lease_LeaseKeepAliveServer) error {
			if _, err := n.recvKeepAlive(st); err != nil {
				return nil
			}
			return noLeader()
		}
	})
	script := &kaScript{ttl: time.Second}
	leader := startFake(t, func(n *fakeNode) { n.keepAlive = script.serve })
	c := newTestClient(t, []string{dead, hintless.addr, leader.addr}, WithDialTimeout(200*time.Millisecond))
	c.rr = 0 // start at the dead endpoint
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	ka, err := c.KeepAlive(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	if ka.TTL() != time.Second || script.renewals.Load() < 1 {
		t.Fatalf("ttl %v, %d renewals on the leader", ka.TTL(), script.renewals.Load())
	}
	if hintless.count() != 1 {
		t.Fatalf("the hintless follower saw %d keepalives, want 1", hintless.count())
	}
}
