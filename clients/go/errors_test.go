package dengine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// statusWithInfo builds the error a d-engine server returns.
func statusWithInfo(t testing.TB, c codes.Code, msg, reason string, md map[string]string) error {
	t.Helper()
	st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason, Metadata: md})
	if err != nil {
		t.Fatalf("WithDetails: %v", err)
	}
	return st.Err()
}

func TestFromStatusNotLeader(t *testing.T) {
	err := error(FromStatus(statusWithInfo(t, codes.Unavailable, "node 2 is not the leader", "NOT_LEADER",
		map[string]string{"leader_id": "3", "leader_addr": "10.0.0.3:9083"})))
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("errors.Is(err, ErrNotLeader) = false for %v", err)
	}
	if errors.Is(err, ErrNoLeader) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("NOT_LEADER error matches another sentinel: %v", err)
	}
	var nl *NotLeaderError
	if !errors.As(err, &nl) {
		t.Fatalf("errors.As(*NotLeaderError) failed for %v", err)
	}
	if nl.LeaderID != 3 || nl.LeaderAddr != "10.0.0.3:9083" {
		t.Fatalf("NotLeaderError = %+v, want leader 3 at 10.0.0.3:9083", nl)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeNotLeader || e.GRPCCode != codes.Unavailable || e.Message != "node 2 is not the leader" {
		t.Fatalf("*Error = %+v", e)
	}
	if !IsRetryable(err) {
		t.Fatal("NOT_LEADER must be retryable")
	}
	// Wrapped by a caller, still classifiable.
	wrapped := fmt.Errorf("saving order: %w", err)
	if !errors.Is(wrapped, ErrNotLeader) || !errors.As(wrapped, &nl) {
		t.Fatal("wrapped error lost its class")
	}
}

func TestFromStatusNotLeaderWithoutHint(t *testing.T) {
	err := FromStatus(statusWithInfo(t, codes.Unavailable, "no", "NOT_LEADER", nil))
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != 0 || nl.LeaderAddr != "" {
		t.Fatalf("got %+v", nl)
	}
}

func TestFromStatusReasons(t *testing.T) {
	cases := []struct {
		grpc      codes.Code
		reason    string
		sentinel  error
		retryable bool
	}{
		{codes.Unavailable, "NO_LEADER", ErrNoLeader, true},
		{codes.InvalidArgument, "INVALID_ARGUMENT", ErrInvalidArgument, false},
		{codes.ResourceExhausted, "OVERLOADED", ErrOverloaded, true},
		{codes.DeadlineExceeded, "TIMEOUT", ErrTimeout, true},
		{codes.Unavailable, "SHUTTING_DOWN", ErrShuttingDown, true},
		{codes.Internal, "STORAGE", ErrStorage, false},
		{codes.FailedPrecondition, "CHANGE_IN_PROGRESS", ErrChangeInProgress, true},
		{codes.OutOfRange, "COMPACTED", ErrCompacted, false},
		{codes.Unauthenticated, "UNAUTHENTICATED", ErrUnauthenticated, false},
		{codes.PermissionDenied, "PERMISSION_DENIED", ErrPermissionDenied, false},
		{codes.NotFound, "UNKNOWN_NODE", ErrUnknownNode, false},
		// Same gRPC code as OVERLOADED, told apart by its reason; not retryable.
		{codes.ResourceExhausted, "NO_SPACE", ErrNoSpace, false},
		// Same gRPC code as UNKNOWN_NODE, told apart by its reason.
		{codes.NotFound, "LEASE_NOT_FOUND", ErrLeaseNotFound, false},
		{codes.FailedPrecondition, "NOT_HELD", ErrNotHeld, false},
		// An unknown reason falls back to the gRPC code.
		{codes.ResourceExhausted, "SOMETHING_NEW", ErrOverloaded, true},
		{codes.Unimplemented, "SOMETHING_NEW", ErrInternal, false},
	}
	for _, tc := range cases {
		t.Run(tc.reason+"/"+tc.grpc.String(), func(t *testing.T) {
			err := FromStatus(statusWithInfo(t, tc.grpc, "msg", tc.reason, map[string]string{"field": "key", "limit": "4096"}))
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("%v does not match %v", err, tc.sentinel)
			}
			if IsRetryable(err) != tc.retryable {
				t.Fatalf("IsRetryable = %v, want %v", IsRetryable(err), tc.retryable)
			}
			if err.Metadata["field"] != "key" || err.Metadata["limit"] != "4096" {
				t.Fatalf("metadata lost: %v", err.Metadata)
			}
			var nl *NotLeaderError
			if errors.As(err, &nl) {
				t.Fatal("only NOT_LEADER carries a *NotLeaderError")
			}
		})
	}
}

func TestFromStatusIgnoresForeignDomain(t *testing.T) {
	st, _ := status.New(codes.Unavailable, "proxy").WithDetails(&errdetails.ErrorInfo{Domain: "envoy", Reason: "INVALID_ARGUMENT"})
	err := FromStatus(st.Err())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("foreign ErrorInfo must be ignored, got %v", err)
	}
}

func TestFromStatusPlainCodes(t *testing.T) {
	cases := map[codes.Code]error{
		codes.Unavailable:       ErrUnavailable,
		codes.DeadlineExceeded:  ErrTimeout,
		codes.InvalidArgument:   ErrInvalidArgument,
		codes.ResourceExhausted: ErrOverloaded,
		codes.Internal:          ErrInternal,
		codes.Canceled:          ErrCanceled,
		codes.OutOfRange:        ErrInvalidArgument,
	}
	for c, want := range cases {
		if err := FromStatus(status.Error(c, "x")); !errors.Is(err, want) {
			t.Errorf("%v: got %v, want %v", c, err, want)
		}
	}
}

func TestMessageSizeLimitIsNotRetryable(t *testing.T) {
	err := FromStatus(status.Error(codes.ResourceExhausted, "grpc: received message larger than max (9000000 vs. 4194304)"))
	if !errors.Is(err, ErrInvalidArgument) || IsRetryable(err) {
		t.Fatalf("got %v", err)
	}
	tonic := FromStatus(status.Error(codes.OutOfRange, "Error, decoded message length too large: found 9000000 bytes, the limit is: 4194304 bytes"))
	if !errors.Is(tonic, ErrInvalidArgument) {
		t.Fatalf("tonic size limit: %v", tonic)
	}
}

func TestFromStatusContextErrors(t *testing.T) {
	err := FromStatus(context.DeadlineExceeded)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	err = FromStatus(fmt.Errorf("op: %w", context.Canceled))
	if !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	if FromStatus(nil) != nil {
		t.Fatal("FromStatus(nil) != nil")
	}
	orig := &Error{Code: CodeStorage}
	if FromStatus(fmt.Errorf("w: %w", orig)) != orig {
		t.Fatal("an *Error must pass through FromStatus unchanged")
	}
}

func TestErrorMessageNamesCodeAndLeader(t *testing.T) {
	err := FromStatus(statusWithInfo(t, codes.Unavailable, "not leader", "NOT_LEADER",
		map[string]string{"leader_id": "2", "leader_addr": "h:1"}))
	err.Endpoint = "h:0"
	want := `d-engine: NOT_LEADER: not leader (leader 2 at "h:1") [endpoint h:0]`
	if err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestEveryWireCodeHasAClientCode(t *testing.T) {
	// Catches a new ErrorCode added to client.proto without a mapping here.
	for name, v := range enginev1ErrorCodeValues() {
		if v == 0 {
			continue
		}
		if _, ok := codeFromReason(name); !ok {
			t.Errorf("ErrorCode %s has no client Code", name)
		}
	}
}
