package dengine

import (
	"bytes"
	"context"
	"fmt"
	"iter"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// MaxRangeLimit is the server's largest page (and the page size of a limit
// of 0). A page also stops earlier at the server's response byte budget.
const MaxRangeLimit = 10000

// RangeResult is one page of Range.
type RangeResult struct {
	// KVs are the page's pairs in key order (values empty WithKeysOnly; none
	// WithCountOnly).
	KVs []*KeyValue
	// More is true when keys of the range follow the last one returned; read
	// them with Range(ctx, NextKey, same options) or use RangeAll.
	More bool
	// Count is the number of live keys in the whole range of the request
	// (from the request's key to the range end), not only in this page.
	Count uint64
	// NextKey is the key to read the next page from (set when More).
	NextKey []byte
	// Revision is the store revision the page was read at. To follow the
	// range afterwards without missing a change, watch it from Revision+1.
	Revision uint64
}

// DeleteRangeResult is the outcome of DeleteRange.
type DeleteRangeResult struct {
	// Deleted is the number of keys deleted.
	Deleted uint64
	// PrevKVs are the deleted pairs (WithPrevKV), in key order.
	PrevKVs []*KeyValue
	// PrevKVsTruncated is true when PrevKVs stops short of Deleted pairs
	// (the response byte budget): every key was deleted all the same.
	PrevKVsTruncated bool
	// Revision is the revision of the deletion.
	Revision uint64
}

func rangeFromProto(resp *enginev1.RangeResponse) *RangeResult {
	out := &RangeResult{
		More:     resp.GetMore(),
		Count:    resp.GetCount(),
		NextKey:  resp.GetNextKey(),
		Revision: resp.GetHeader().GetRevision(),
	}
	for _, kv := range resp.GetKvs() {
		out.KVs = append(out.KVs, kvFromProto(kv))
	}
	return out
}

func deleteRangeFromProto(resp *enginev1.DeleteRangeResponse) *DeleteRangeResult {
	out := &DeleteRangeResult{
		Deleted:          resp.GetDeleted(),
		PrevKVsTruncated: resp.GetPrevKvsTruncated(),
		Revision:         resp.GetRevision(),
	}
	for _, kv := range resp.GetPrevKvs() {
		out.PrevKVs = append(out.PrevKVs, kvFromProto(kv))
	}
	return out
}

// rangeRequest builds the wire request of a range op.
func (c *opConfig) rangeRequest(key []byte) (*enginev1.RangeRequest, error) {
	k, end, err := c.bounds(key)
	if err != nil {
		return nil, err
	}
	return &enginev1.RangeRequest{
		Key:         k,
		RangeEnd:    end,
		Limit:       uint32(c.limit),
		KeysOnly:    c.keysOnly,
		CountOnly:   c.countOnly,
		Consistency: c.read.proto(),
	}, nil
}

// Range reads one page of the keys addressed by key and opts, in key order:
// the key alone by default; WithPrefix, WithRangeEnd or WithFromKey for a
// range. WithLimit caps the page (0: MaxRangeLimit); WithKeysOnly,
// WithCountOnly and WithConsistency as their names say.
//
// A page may stop before the range's end (the limit or the server's byte
// budget): then More is set and NextKey is where the next page starts.
// RangeAll and RangePages walk every page for you.
func (c *Client) Range(ctx context.Context, key []byte, opts ...OpOption) (*RangeResult, error) {
	cfg, err := buildOp("Range", opts, allowRange)
	if err != nil {
		return nil, err
	}
	req, err := cfg.rangeRequest(key)
	if err != nil {
		return nil, err
	}
	return c.rangePage(ctx, req, cfg.read)
}

func (c *Client) rangePage(ctx context.Context, req *enginev1.RangeRequest, rc readConfig) (*RangeResult, error) {
	var out *RangeResult
	err := c.invoke(ctx, rc.route(), func(ctx context.Context, cn *conn) error {
		resp, err := cn.kv.Range(ctx, req)
		if err != nil {
			return err
		}
		out = rangeFromProto(resp)
		if out.More && bytes.Compare(out.NextKey, req.GetKey()) <= 0 {
			// Following it would loop forever or re-read keys.
			return newError(CodeInternal, fmt.Sprintf("Range: the server set more with next_key %q, not after the request's key %q", out.NextKey, req.GetKey()), nil)
		}
		return nil
	})
	return out, err
}

// RangePages walks every page of a range (see Range for the options;
// WithLimit is the page size, WithCountOnly is refused). Each page is its
// own point in time (its Revision): keys written or deleted behind the
// walk's position while it runs may be missed, every other key is seen
// exactly once. Stop early by breaking out of the loop.
//
//	for page, err := range c.RangePages(ctx, []byte("jobs/"), dengine.WithPrefix()) {
//		if err != nil {
//			return err
//		}
//		...
//	}
//
// On an error the iterator yields (nil, err) once and stops.
func (c *Client) RangePages(ctx context.Context, key []byte, opts ...OpOption) iter.Seq2[*RangeResult, error] {
	return func(yield func(*RangeResult, error) bool) {
		cfg, err := buildOp("RangePages/RangeAll", opts, allowRangeAll)
		if err != nil {
			yield(nil, err)
			return
		}
		req, err := cfg.rangeRequest(key)
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			page, err := c.rangePage(ctx, req, cfg.read)
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(page, nil) || !page.More {
				return
			}
			req = &enginev1.RangeRequest{
				Key:         page.NextKey,
				RangeEnd:    req.GetRangeEnd(),
				Limit:       req.GetLimit(),
				KeysOnly:    req.GetKeysOnly(),
				CountOnly:   req.GetCountOnly(),
				Consistency: req.GetConsistency(),
			}
		}
	}
}

// RangeAll yields every pair of a range in key order, reading it page by
// page (see RangePages for the options and the consistency of the walk).
//
//	for kv, err := range c.RangeAll(ctx, []byte("jobs/"), dengine.WithPrefix()) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(string(kv.Key))
//	}
//
// On an error the iterator yields (nil, err) once and stops.
func (c *Client) RangeAll(ctx context.Context, key []byte, opts ...OpOption) iter.Seq2[*KeyValue, error] {
	return func(yield func(*KeyValue, error) bool) {
		for page, err := range c.RangePages(ctx, key, opts...) {
			if err != nil {
				yield(nil, err)
				return
			}
			for _, kv := range page.KVs {
				if !yield(kv, nil) {
					return
				}
			}
		}
	}
}

// DeleteRange deletes the keys addressed by key and opts in one replicated
// step: the key alone by default; WithPrefix, WithRangeEnd or WithFromKey
// for a range. WithPrevKV returns the deleted pairs. Like every write it
// carries a WriteId and is applied exactly once across retries.
func (c *Client) DeleteRange(ctx context.Context, key []byte, opts ...OpOption) (*DeleteRangeResult, error) {
	cfg, err := buildOp("DeleteRange", opts, allowDeleteRange)
	if err != nil {
		return nil, err
	}
	k, end, err := cfg.bounds(key)
	if err != nil {
		return nil, err
	}
	var out *DeleteRangeResult
	err = c.write(ctx, func(ctx context.Context, cn *conn, id *enginev1.WriteId) error {
		resp, err := cn.kv.DeleteRange(ctx, &enginev1.DeleteRangeRequest{Key: k, RangeEnd: end, PrevKv: cfg.prevKV, WriteId: id})
		if err != nil {
			return err
		}
		out = deleteRangeFromProto(resp)
		return nil
	})
	return out, err
}
