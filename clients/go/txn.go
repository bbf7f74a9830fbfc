package dengine

import (
	"context"
	"fmt"
	"strconv"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// MaxTxnOps is the most compares, and the most ops per branch, a transaction
// may hold (the server refuses more with INVALID_ARGUMENT; the client checks
// first).
const MaxTxnOps = 128

// CompareOp is the operator of a transaction compare.
type CompareOp int

const (
	Equal CompareOp = iota
	NotEqual
	Less
	Greater
)

func (o CompareOp) String() string {
	switch o {
	case Equal:
		return "="
	case NotEqual:
		return "!="
	case Less:
		return "<"
	case Greater:
		return ">"
	}
	return "CompareOp(" + strconv.Itoa(int(o)) + ")"
}

func (o CompareOp) proto() (enginev1.Compare_Op, bool) {
	switch o {
	case Equal:
		return enginev1.Compare_EQUAL, true
	case NotEqual:
		return enginev1.Compare_NOT_EQUAL, true
	case Less:
		return enginev1.Compare_LESS, true
	case Greater:
		return enginev1.Compare_GREATER, true
	}
	return 0, false
}

// Cmp is one condition of a transaction, on one key. Build it with
// CompareValue, CompareVersion, CompareCreateRevision, CompareModRevision or
// CompareLease. A missing key has version, create revision, mod revision and
// lease 0, so CompareVersion(k, Equal, 0) means "k does not exist"; a value
// compare on a missing key is false whatever the operator.
type Cmp struct {
	pb  *enginev1.Compare
	err error
}

func newCmp(what string, key []byte, op CompareOp, set func(*enginev1.Compare)) Cmp {
	if err := checkKey(what+": key", key); err != nil {
		return Cmp{err: err}
	}
	pop, ok := op.proto()
	if !ok {
		return Cmp{err: newError(CodeInvalidArgument, fmt.Sprintf("%s: unknown operator %v (use Equal, NotEqual, Less or Greater)", what, op), nil)}
	}
	pb := &enginev1.Compare{Op: pop, Key: key}
	set(pb)
	return Cmp{pb: pb}
}

// CompareValue compares the key's value with value (bytewise).
func CompareValue(key []byte, op CompareOp, value []byte) Cmp {
	if value == nil {
		value = []byte{}
	}
	return newCmp("CompareValue", key, op, func(c *enginev1.Compare) { c.Target = &enginev1.Compare_Value{Value: value} })
}

// CompareVersion compares the key's version (modifications since its
// creation; 0 if it does not exist).
func CompareVersion(key []byte, op CompareOp, version uint64) Cmp {
	return newCmp("CompareVersion", key, op, func(c *enginev1.Compare) { c.Target = &enginev1.Compare_Version{Version: version} })
}

// CompareCreateRevision compares the revision that created the key (0 if it
// does not exist).
func CompareCreateRevision(key []byte, op CompareOp, rev uint64) Cmp {
	return newCmp("CompareCreateRevision", key, op, func(c *enginev1.Compare) {
		c.Target = &enginev1.Compare_CreateRevision{CreateRevision: rev}
	})
}

// CompareModRevision compares the revision that last modified the key (0 if
// it does not exist).
func CompareModRevision(key []byte, op CompareOp, rev uint64) Cmp {
	return newCmp("CompareModRevision", key, op, func(c *enginev1.Compare) {
		c.Target = &enginev1.Compare_ModRevision{ModRevision: rev}
	})
}

// CompareLease compares the lease the key is attached to (0: none, or the
// key does not exist).
func CompareLease(key []byte, op CompareOp, id LeaseID) Cmp {
	return newCmp("CompareLease", key, op, func(c *enginev1.Compare) { c.Target = &enginev1.Compare_Lease{Lease: uint64(id)} })
}

// Op is one operation of a transaction branch: OpGet, OpRange, OpPut,
// OpDelete or OpDeleteRange.
type Op struct {
	pb  *enginev1.TxnOp
	err error
}

// OpGet reads one key (OpRange of the key alone).
func OpGet(key []byte) Op { return OpRange(key) }

// OpRange reads a page of a range at the transaction's revision. It takes
// WithPrefix, WithRangeEnd, WithFromKey, WithLimit, WithKeysOnly and
// WithCountOnly (see Range).
func OpRange(key []byte, opts ...OpOption) Op {
	cfg, err := buildOp("OpRange", opts, allowTxnRange)
	if err != nil {
		return Op{err: err}
	}
	req, err := cfg.rangeRequest(key)
	if err != nil {
		return Op{err: err}
	}
	req.Consistency = enginev1.Consistency_CONSISTENCY_UNSPECIFIED
	return Op{pb: &enginev1.TxnOp{Op: &enginev1.TxnOp_Range{Range: req}}}
}

// OpPut stores value under key; WithLease attaches it to a lease.
func OpPut(key, value []byte, opts ...OpOption) Op {
	cfg, err := buildOp("OpPut", opts, allowPut)
	if err != nil {
		return Op{err: err}
	}
	if err := checkKey("OpPut: key", key); err != nil {
		return Op{err: err}
	}
	if value == nil {
		value = []byte{}
	}
	return Op{pb: &enginev1.TxnOp{Op: &enginev1.TxnOp_Put{Put: &enginev1.PutRequest{Key: key, Value: value, Lease: uint64(cfg.lease)}}}}
}

// OpDelete deletes one key (OpDeleteRange of the key alone).
func OpDelete(key []byte) Op { return OpDeleteRange(key) }

// OpDeleteRange deletes a key or a range; it takes WithPrefix, WithRangeEnd,
// WithFromKey and WithPrevKV (see DeleteRange).
func OpDeleteRange(key []byte, opts ...OpOption) Op {
	cfg, err := buildOp("OpDeleteRange", opts, allowDeleteRange)
	if err != nil {
		return Op{err: err}
	}
	k, end, err := cfg.bounds(key)
	if err != nil {
		return Op{err: err}
	}
	return Op{pb: &enginev1.TxnOp{Op: &enginev1.TxnOp_DeleteRange{DeleteRange: &enginev1.DeleteRangeRequest{Key: k, RangeEnd: end, PrevKv: cfg.prevKV}}}}
}

// Txn is a transaction under construction: If(compares).Then(ops).Else(ops),
// then Commit. If every compare holds, the Then ops run, else the Else ops:
// atomically, in one log entry, in order (a later op sees an earlier op's
// writes).
//
//	res, err := c.Txn(ctx).
//		If(dengine.CompareModRevision(k, dengine.Equal, seen)).
//		Then(dengine.OpPut(k, v)).
//		Else(dengine.OpGet(k)).
//		Commit()
//
// A Txn is not safe for concurrent use; build one per transaction.
type Txn struct {
	c    *Client
	ctx  context.Context
	cmps []Cmp
	then []Op
	els  []Op
}

// Txn starts a transaction bounded by ctx (retries included).
func (c *Client) Txn(ctx context.Context) *Txn { return &Txn{c: c, ctx: ctx} }

// If adds compares; all of them must hold for Then to run. No compare: Then
// runs.
func (t *Txn) If(cmps ...Cmp) *Txn { t.cmps = append(t.cmps, cmps...); return t }

// Then adds ops run when every compare holds.
func (t *Txn) Then(ops ...Op) *Txn { t.then = append(t.then, ops...); return t }

// Else adds ops run when a compare fails.
func (t *Txn) Else(ops ...Op) *Txn { t.els = append(t.els, ops...); return t }

// TxnResult is the outcome of a committed transaction.
type TxnResult struct {
	// Succeeded is true if every compare held (Then ran), false if Else ran.
	Succeeded bool
	// Results has one entry per op of the branch that ran, in order.
	Results []TxnOpResult
	// Revision is the revision of the transaction's log entry.
	Revision uint64
	// Replayed is true when this answers a retry of a transaction the server
	// had already applied (its first answer was lost): its writes took effect
	// once, at Revision; range results are not remembered and are empty.
	Replayed bool
}

// TxnOpResult is the result of one op; the field of the op's kind is set.
type TxnOpResult struct {
	Range       *RangeResult       // OpGet, OpRange
	Put         *PutResult         // OpPut
	DeleteRange *DeleteRangeResult // OpDelete, OpDeleteRange
}

// PutResult is the result of an OpPut.
type PutResult struct {
	Revision uint64
}

func txnOpResultFromProto(r *enginev1.TxnOpResult) TxnOpResult {
	switch v := r.GetResult().(type) {
	case *enginev1.TxnOpResult_Range:
		return TxnOpResult{Range: rangeFromProto(v.Range)}
	case *enginev1.TxnOpResult_Put:
		return TxnOpResult{Put: &PutResult{Revision: v.Put.GetRevision()}}
	case *enginev1.TxnOpResult_DeleteRange:
		return TxnOpResult{DeleteRange: deleteRangeFromProto(v.DeleteRange)}
	}
	return TxnOpResult{}
}

func tooMany(what string, n int) error {
	return &Error{
		Code:     CodeInvalidArgument,
		Message:  fmt.Sprintf("a transaction takes at most %d %s, got %d", MaxTxnOps, what, n),
		Metadata: map[string]string{"field": what, "limit": strconv.Itoa(MaxTxnOps)},
	}
}

func txnOps(branch string, ops []Op) ([]*enginev1.TxnOp, error) {
	if len(ops) > MaxTxnOps {
		return nil, tooMany(branch, len(ops))
	}
	out := make([]*enginev1.TxnOp, 0, len(ops))
	for i, op := range ops {
		if op.err != nil {
			return nil, prefixErr(fmt.Sprintf("%s[%d]: ", branch, i), op.err)
		}
		if op.pb == nil {
			return nil, newError(CodeInvalidArgument, fmt.Sprintf("%s[%d]: empty Op (build ops with OpGet, OpRange, OpPut, OpDelete, OpDeleteRange)", branch, i), nil)
		}
		out = append(out, op.pb)
	}
	return out, nil
}

// prefixErr returns a copy of a client-side *Error with its message prefixed.
func prefixErr(prefix string, err error) error {
	e := FromStatus(err)
	cp := *e
	cp.Message = prefix + cp.Message
	return &cp
}

// Commit sends the transaction. Like every write it carries a WriteId and is
// applied exactly once across retries (see TxnResult.Replayed). Bad input
// (more than MaxTxnOps compares or ops in a branch, an invalid compare or
// op) fails with ErrInvalidArgument and nothing is applied.
func (t *Txn) Commit() (*TxnResult, error) {
	if len(t.cmps) > MaxTxnOps {
		return nil, tooMany("compares", len(t.cmps))
	}
	req := &enginev1.TxnRequest{}
	for i, cmp := range t.cmps {
		if cmp.err != nil {
			return nil, prefixErr(fmt.Sprintf("compares[%d]: ", i), cmp.err)
		}
		if cmp.pb == nil {
			return nil, newError(CodeInvalidArgument, fmt.Sprintf("compares[%d]: empty Cmp (build compares with CompareValue, CompareVersion...)", i), nil)
		}
		req.Compare = append(req.Compare, cmp.pb)
	}
	var err error
	if req.Success, err = txnOps("then", t.then); err != nil {
		return nil, err
	}
	if req.Failure, err = txnOps("else", t.els); err != nil {
		return nil, err
	}
	var out *TxnResult
	err = t.c.write(t.ctx, func(ctx context.Context, cn *conn, id *enginev1.WriteId) error {
		req.WriteId = id
		resp, err := cn.kv.Txn(ctx, req)
		if err != nil {
			return err
		}
		out = &TxnResult{Succeeded: resp.GetSucceeded(), Revision: resp.GetRevision(), Replayed: resp.GetReplayed()}
		for _, r := range resp.GetResults() {
			out.Results = append(out.Results, txnOpResultFromProto(r))
		}
		return nil
	})
	return out, err
}
