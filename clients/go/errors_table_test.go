package dengine

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// The Go row of docs/clients.md's error table: every ErrorCode as a watch
// cancel_code → sentinel, and whether the watch resumes (vs ends) on it.
func TestWatchCancelCodeTable(t *testing.T) {
	resumes := map[enginev1.ErrorCode]bool{
		enginev1.ErrorCode_NOT_LEADER:         true,
		enginev1.ErrorCode_NO_LEADER:          true,
		enginev1.ErrorCode_TIMEOUT:            true,
		enginev1.ErrorCode_SHUTTING_DOWN:      true,
		enginev1.ErrorCode_CHANGE_IN_PROGRESS: true,
	}
	sentinels := map[enginev1.ErrorCode]error{
		enginev1.ErrorCode_ERROR_CODE_UNSPECIFIED: ErrWatchCanceled,
		enginev1.ErrorCode_NOT_LEADER:             ErrNotLeader,
		enginev1.ErrorCode_NO_LEADER:              ErrNoLeader,
		enginev1.ErrorCode_INVALID_ARGUMENT:       ErrInvalidArgument,
		enginev1.ErrorCode_OVERLOADED:             ErrOverloaded,
		enginev1.ErrorCode_TIMEOUT:                ErrTimeout,
		enginev1.ErrorCode_SHUTTING_DOWN:          ErrShuttingDown,
		enginev1.ErrorCode_STORAGE:                ErrStorage,
		enginev1.ErrorCode_CHANGE_IN_PROGRESS:     ErrChangeInProgress,
		enginev1.ErrorCode_COMPACTED:              ErrCompacted,
		enginev1.ErrorCode_UNAUTHENTICATED:        ErrUnauthenticated,
		enginev1.ErrorCode_PERMISSION_DENIED:      ErrPermissionDenied,
		enginev1.ErrorCode_UNKNOWN_NODE:           ErrUnknownNode,
		enginev1.ErrorCode_NO_SPACE:               ErrNoSpace,
		enginev1.ErrorCode_LEASE_NOT_FOUND:        ErrLeaseNotFound,
		enginev1.ErrorCode_NOT_HELD:               ErrNotHeld,
	}
	for v, name := range enginev1.ErrorCode_name {
		code := enginev1.ErrorCode(v)
		want, ok := sentinels[code]
		if !ok {
			t.Errorf("ErrorCode %s is missing from this table (and from docs/clients.md?)", name)
			continue
		}
		e := watchCancel(&enginev1.WatchResponse{Canceled: true, CancelCode: code, CancelReason: "text never decides"}, "n1")
		if !errors.Is(e, want) {
			t.Errorf("cancel_code %s → %v, want %v", name, e, want)
		}
		if got := cancelResumable(e.Code); got != resumes[code] {
			t.Errorf("cancel_code %s: resumes = %v, want %v", name, got, resumes[code])
		}
	}
}

// Transport failures (no d-engine ErrorInfo): what a call retries and what a
// watch resumes on.
func TestTransportFailureTable(t *testing.T) {
	cases := []struct {
		st          error
		want        error
		callRetries bool // invoke retries it (after unaskedCancel)
		watchResume bool // a broken watch stream is re-created
	}{
		{status.Error(codes.Unavailable, "connection refused"), ErrUnavailable, true, true},
		{status.Error(codes.DeadlineExceeded, "deadline"), ErrTimeout, true, true},
		// tonic's server-side request timeout, or a stream reset by a node going away.
		{status.Error(codes.Canceled, "Timeout expired"), ErrTimeout, true, true},
		{status.Error(codes.Internal, "h2 protocol error"), ErrInternal, false, true},
		{status.Error(codes.Unknown, "connection reset"), ErrInternal, false, true},
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (9 vs. 4)"), ErrInvalidArgument, false, false},
		{status.Error(codes.ResourceExhausted, "busy"), ErrOverloaded, true, false},
		{status.Error(codes.Unauthenticated, "no token"), ErrUnauthenticated, false, false},
	}
	for _, tc := range cases {
		e := FromStatus(tc.st)
		watchResumes := breakResumable(e)
		e = unaskedCancel(e)
		if !errors.Is(e, tc.want) {
			t.Errorf("%v → %v, want %v", tc.st, e, tc.want)
		}
		if IsRetryable(e) != tc.callRetries {
			t.Errorf("%v: call retried = %v, want %v", tc.st, IsRetryable(e), tc.callRetries)
		}
		if watchResumes != tc.watchResume {
			t.Errorf("%v: watch resumes = %v, want %v", tc.st, watchResumes, tc.watchResume)
		}
	}
	// A CANCELLED that carries a d-engine ErrorInfo is the server's answer, kept as is.
	own := FromStatus(statusWithInfo(t, codes.Canceled, "x", "INVALID_ARGUMENT", nil))
	if unaskedCancel(own) != own {
		t.Fatal("a server error must not be reclassified")
	}
}

// The Go row of docs/clients.md's error table for server answers: every
// wire ErrorCode (the test fails when the proto gains one without a row),
// sent with the gRPC code the table gives, becomes the table's sentinel and
// IsRetryable answers its "retried" column.
func TestServerErrorTable(t *testing.T) {
	rows := map[enginev1.ErrorCode]struct {
		grpc      codes.Code
		sentinel  error
		retryable bool
	}{
		enginev1.ErrorCode_NOT_LEADER:         {codes.Unavailable, ErrNotLeader, true},
		enginev1.ErrorCode_NO_LEADER:          {codes.Unavailable, ErrNoLeader, true},
		enginev1.ErrorCode_INVALID_ARGUMENT:   {codes.InvalidArgument, ErrInvalidArgument, false},
		enginev1.ErrorCode_OVERLOADED:         {codes.ResourceExhausted, ErrOverloaded, true},
		enginev1.ErrorCode_TIMEOUT:            {codes.DeadlineExceeded, ErrTimeout, true},
		enginev1.ErrorCode_SHUTTING_DOWN:      {codes.Unavailable, ErrShuttingDown, true},
		enginev1.ErrorCode_STORAGE:            {codes.Internal, ErrStorage, false},
		enginev1.ErrorCode_CHANGE_IN_PROGRESS: {codes.FailedPrecondition, ErrChangeInProgress, true},
		enginev1.ErrorCode_COMPACTED:          {codes.OutOfRange, ErrCompacted, false},
		enginev1.ErrorCode_UNAUTHENTICATED:    {codes.Unauthenticated, ErrUnauthenticated, false},
		enginev1.ErrorCode_PERMISSION_DENIED:  {codes.PermissionDenied, ErrPermissionDenied, false},
		enginev1.ErrorCode_UNKNOWN_NODE:       {codes.NotFound, ErrUnknownNode, false},
		enginev1.ErrorCode_NO_SPACE:           {codes.ResourceExhausted, ErrNoSpace, false},
		enginev1.ErrorCode_LEASE_NOT_FOUND:    {codes.NotFound, ErrLeaseNotFound, false},
		enginev1.ErrorCode_NOT_HELD:           {codes.FailedPrecondition, ErrNotHeld, false},
	}
	for v, name := range enginev1.ErrorCode_name {
		code := enginev1.ErrorCode(v)
		if code == enginev1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			continue
		}
		row, ok := rows[code]
		if !ok {
			t.Errorf("ErrorCode %s has no row here (add one here and in docs/clients.md)", name)
			continue
		}
		md := map[string]string{}
		if code == enginev1.ErrorCode_NOT_LEADER {
			md = map[string]string{"leader_id": "3", "leader_addr": "10.0.0.3:9083"}
		}
		err := FromStatus(statusWithInfo(t, row.grpc, "from the table test", name, md))
		if !errors.Is(err, row.sentinel) {
			t.Errorf("%s → %v, want %v", name, err, row.sentinel)
		}
		if IsRetryable(err) != row.retryable {
			t.Errorf("%s: IsRetryable = %v, want %v", name, IsRetryable(err), row.retryable)
		}
		if code == enginev1.ErrorCode_NOT_LEADER {
			var nl *NotLeaderError
			if !errors.As(err, &nl) || nl.LeaderID != 3 || nl.LeaderAddr != "10.0.0.3:9083" {
				t.Errorf("NOT_LEADER hint lost: %+v", nl)
			}
		}
	}
}

// The client-side rows of the table: errors no server sends.
func TestClientSideErrorRows(t *testing.T) {
	rows := []struct {
		err       error
		sentinel  error
		retryable bool
	}{
		{newError(CodeClosed, "client is closed", nil), ErrClosed, false},
		{FromStatus(context.Canceled), ErrCanceled, false},
		{FromStatus(context.DeadlineExceeded), ErrTimeout, true},
		{newError(CodeLeaseExpired, "no renewal acknowledged", nil), ErrLeaseExpired, false},
		{watchCancel(&enginev1.WatchResponse{Canceled: true, CancelReason: "no code"}, "n1"), ErrWatchCanceled, false},
	}
	for _, r := range rows {
		if !errors.Is(r.err, r.sentinel) {
			t.Errorf("%v is not %v", r.err, r.sentinel)
		}
		if IsRetryable(r.err) != r.retryable {
			t.Errorf("%v: IsRetryable = %v, want %v", r.err, IsRetryable(r.err), r.retryable)
		}
	}
	// A closed client answers ErrClosed for real.
	c, err := NewClient("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if _, err := c.Put(context.Background(), []byte("k"), []byte("v")); !errors.Is(err, ErrClosed) || IsRetryable(err) {
		t.Fatalf("Put after Close = %v", err)
	}
}
