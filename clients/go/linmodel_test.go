package dengine

import (
	"fmt"
	"sort"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The sequential specification the linearizability test checks histories
// against: a map of keys to values with put, get and compare-and-swap,
// partitioned per key (so the state is one key's value).

type linOpKind int

const (
	linPut linOpKind = iota
	linGet
	linCAS
)

// linInput is an operation as invoked. Values are never empty, so "" means
// "absent" (for Expected: the key must not exist).
type linInput struct {
	Kind     linOpKind
	Key      string
	Value    string // put / cas new value
	Expected string // cas
}

// linOutput is what the operation returned.
type linOutput struct {
	// Unknown: a write whose outcome is unknown (timeout, unavailable...);
	// recorded with an infinite return time, so it may or may not have
	// taken effect.
	Unknown bool
	Value   string // get: the value read ("" = absent)
	OK      bool   // cas: succeeded
}

var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(linInput), output.(linOutput)
		switch in.Kind {
		case linPut:
			return true, in.Value
		case linGet:
			return out.Value == st, st
		case linCAS:
			holds := st == in.Expected
			if out.Unknown {
				if holds {
					return true, in.Value
				}
				return true, st
			}
			if out.OK != holds {
				return false, st
			}
			if holds {
				return true, in.Value
			}
			return true, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		res := ""
		switch {
		case out.Unknown:
			res = " -> ?"
		case in.Kind == linGet:
			res = fmt.Sprintf(" -> %q", out.Value)
		case in.Kind == linCAS:
			res = fmt.Sprintf(" -> %v", out.OK)
		}
		switch in.Kind {
		case linPut:
			return fmt.Sprintf("put(%s, %q)%s", in.Key, in.Value, res)
		case linGet:
			return fmt.Sprintf("get(%s)%s", in.Key, res)
		default:
			return fmt.Sprintf("cas(%s, %q -> %q)%s", in.Key, in.Expected, in.Value, res)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state.(string)) },
}

func linOp(client int, in linInput, out linOutput, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
}

// The model accepts linearizable histories and rejects the anomalies the
// cluster test exists to find (so that test can fail).
func TestLinModel(t *testing.T) {
	const inf = int64(1) << 62
	put := func(k, v string) linInput { return linInput{Kind: linPut, Key: k, Value: v} }
	get := func(k string) linInput { return linInput{Kind: linGet, Key: k} }
	cas := func(k, e, v string) linInput { return linInput{Kind: linCAS, Key: k, Expected: e, Value: v} }
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"sequential", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{}, 0, 10),
			linOp(1, get("x"), linOutput{Value: "1"}, 20, 30),
			linOp(0, cas("x", "1", "2"), linOutput{OK: true}, 40, 50),
			linOp(1, cas("x", "1", "3"), linOutput{OK: false}, 60, 70),
			linOp(1, get("x"), linOutput{Value: "2"}, 80, 90),
		}, true},
		{"concurrent read may see either", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{}, 0, 100),
			linOp(1, get("x"), linOutput{Value: ""}, 10, 20),
			linOp(2, get("x"), linOutput{Value: "1"}, 30, 40),
		}, true},
		{"stale read after write returned", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{}, 0, 10),
			linOp(1, get("x"), linOutput{Value: ""}, 20, 30),
		}, false},
		{"lost acknowledged write", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{}, 0, 10),
			linOp(0, put("x", "2"), linOutput{}, 20, 30),
			linOp(1, get("x"), linOutput{Value: "1"}, 40, 50),
		}, false},
		{"two CAS from the same value both succeed", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{}, 0, 10),
			linOp(1, cas("x", "1", "a"), linOutput{OK: true}, 20, 30),
			linOp(2, cas("x", "1", "b"), linOutput{OK: true}, 20, 30),
		}, false},
		{"create-if-absent twice", []porcupine.Operation{
			linOp(1, cas("x", "", "a"), linOutput{OK: true}, 0, 10),
			linOp(2, cas("x", "", "b"), linOutput{OK: true}, 20, 30),
		}, false},
		{"unknown write may have happened", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{Unknown: true}, 0, inf),
			linOp(1, get("x"), linOutput{Value: "1"}, 20, 30),
			linOp(1, get("x"), linOutput{Value: "1"}, 40, 50),
		}, true},
		{"unknown write may not have happened", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{Unknown: true}, 0, inf),
			linOp(1, get("x"), linOutput{Value: ""}, 20, 30),
		}, true},
		{"unknown write cannot un-happen", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{Unknown: true}, 0, inf),
			linOp(1, get("x"), linOutput{Value: "1"}, 20, 30),
			linOp(1, get("x"), linOutput{Value: ""}, 40, 50),
		}, false},
		{"keys are independent", []porcupine.Operation{
			linOp(0, put("x", "1"), linOutput{}, 0, 10),
			linOp(1, get("y"), linOutput{Value: ""}, 20, 30),
			linOp(1, get("x"), linOutput{Value: "1"}, 20, 30),
		}, true},
	}
	for _, tc := range cases {
		if got := porcupine.CheckOperations(linModel, tc.ops); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.ok)
		}
	}
}
