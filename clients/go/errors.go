package dengine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

// ErrorDomain is the google.rpc.ErrorInfo domain the server uses.
const ErrorDomain = "d-engine"

// Code classifies an error. The server-side codes mirror dengine.v1.ErrorCode;
// CodeUnavailable, CodeCanceled, CodeClosed and CodeWatchCanceled are raised by
// the client itself.
type Code int

const (
	// CodeInternal: anything the client cannot classify (a server bug, an
	// unimplemented RPC, an unexpected gRPC status).
	CodeInternal Code = iota
	CodeNotLeader
	CodeNoLeader
	CodeInvalidArgument
	CodeOverloaded
	CodeTimeout
	CodeShuttingDown
	CodeStorage
	CodeChangeInProgress
	CodeCompacted
	CodeUnauthenticated
	CodePermissionDenied
	CodeUnknownNode
	// CodeUnavailable: the server could not be reached (connection refused,
	// reset, TLS failure...).
	CodeUnavailable
	// CodeCanceled: the caller's context was cancelled.
	CodeCanceled
	// CodeClosed: the Client was closed.
	CodeClosed
	// CodeWatchCanceled: the server ended a watch (WatchResponse.canceled).
	CodeWatchCanceled
	// CodeNoSpace: the write would take the node's stored data past its
	// storage quota (storage.quota_bytes); the NOSPACE alarm is raised.
	// Mirrors dengine.v1.ErrorCode NO_SPACE (added after the codes above,
	// so their values do not change).
	CodeNoSpace
	// CodeLeaseNotFound: the lease does not exist (never granted, revoked or
	// expired). Mirrors dengine.v1.ErrorCode LEASE_NOT_FOUND.
	CodeLeaseNotFound
	// CodeLeaseExpired: raised by the client's KeepAlive when no renewal was
	// acknowledged before the lease's TTL ran out: the lease must be
	// presumed expired (the server may not have noticed yet).
	CodeLeaseExpired
	// CodeNotHeld: the lock or election leadership named by the request is
	// not held any more (or belongs to another holder). Mirrors
	// dengine.v1.ErrorCode NOT_HELD.
	CodeNotHeld
)

var codeNames = [...]string{
	CodeInternal:         "INTERNAL",
	CodeNotLeader:        "NOT_LEADER",
	CodeNoLeader:         "NO_LEADER",
	CodeInvalidArgument:  "INVALID_ARGUMENT",
	CodeOverloaded:       "OVERLOADED",
	CodeTimeout:          "TIMEOUT",
	CodeShuttingDown:     "SHUTTING_DOWN",
	CodeStorage:          "STORAGE",
	CodeChangeInProgress: "CHANGE_IN_PROGRESS",
	CodeCompacted:        "COMPACTED",
	CodeUnauthenticated:  "UNAUTHENTICATED",
	CodePermissionDenied: "PERMISSION_DENIED",
	CodeUnknownNode:      "UNKNOWN_NODE",
	CodeUnavailable:      "UNAVAILABLE",
	CodeCanceled:         "CANCELED",
	CodeClosed:           "CLIENT_CLOSED",
	CodeWatchCanceled:    "WATCH_CANCELED",
	CodeNoSpace:          "NO_SPACE",
	CodeLeaseNotFound:    "LEASE_NOT_FOUND",
	CodeLeaseExpired:     "LEASE_EXPIRED",
	CodeNotHeld:          "NOT_HELD",
}

// String returns the code's wire name (e.g. "NOT_LEADER").
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.Itoa(int(c)) + ")"
}

// codeFromReason maps an ErrorInfo reason (an ErrorCode name) to a Code.
func codeFromReason(reason string) (Code, bool) {
	v, ok := enginev1.ErrorCode_value[reason]
	if !ok {
		return CodeInternal, false
	}
	switch enginev1.ErrorCode(v) {
	case enginev1.ErrorCode_NOT_LEADER:
		return CodeNotLeader, true
	case enginev1.ErrorCode_NO_LEADER:
		return CodeNoLeader, true
	case enginev1.ErrorCode_INVALID_ARGUMENT:
		return CodeInvalidArgument, true
	case enginev1.ErrorCode_OVERLOADED:
		return CodeOverloaded, true
	case enginev1.ErrorCode_TIMEOUT:
		return CodeTimeout, true
	case enginev1.ErrorCode_SHUTTING_DOWN:
		return CodeShuttingDown, true
	case enginev1.ErrorCode_STORAGE:
		return CodeStorage, true
	case enginev1.ErrorCode_CHANGE_IN_PROGRESS:
		return CodeChangeInProgress, true
	case enginev1.ErrorCode_COMPACTED:
		return CodeCompacted, true
	case enginev1.ErrorCode_UNAUTHENTICATED:
		return CodeUnauthenticated, true
	case enginev1.ErrorCode_PERMISSION_DENIED:
		return CodePermissionDenied, true
	case enginev1.ErrorCode_UNKNOWN_NODE:
		return CodeUnknownNode, true
	case enginev1.ErrorCode_NO_SPACE:
		return CodeNoSpace, true
	case enginev1.ErrorCode_LEASE_NOT_FOUND:
		return CodeLeaseNotFound, true
	case enginev1.ErrorCode_NOT_HELD:
		return CodeNotHeld, true
	}
	return CodeInternal, false
}

// codeFromGRPC classifies a status that carries no d-engine ErrorInfo (from
// the gRPC library on either side, or a proxy).
func codeFromGRPC(c codes.Code, msg string) Code {
	switch c {
	case codes.Unavailable:
		return CodeUnavailable
	case codes.DeadlineExceeded:
		return CodeTimeout
	case codes.Canceled:
		return CodeCanceled
	case codes.InvalidArgument:
		return CodeInvalidArgument
	case codes.ResourceExhausted:
		if strings.Contains(msg, "larger than max") || strings.Contains(msg, "too large") {
			// gRPC's message size limit: retrying cannot help.
			return CodeInvalidArgument
		}
		return CodeOverloaded
	case codes.Unauthenticated:
		return CodeUnauthenticated
	case codes.PermissionDenied:
		return CodePermissionDenied
	case codes.OutOfRange:
		// tonic reports an over-long message as OUT_OF_RANGE; COMPACTED
		// always carries its ErrorInfo.
		return CodeInvalidArgument
	}
	return CodeInternal
}

// sentinel is the type of the Err* values: compare with errors.Is.
type sentinel struct {
	code Code
	msg  string
}

func (s *sentinel) Error() string { return "d-engine: " + s.msg }

// Sentinels for errors.Is. Every error the client returns for a failed
// operation is an *Error (and, for NOT_LEADER, also a *NotLeaderError) that
// matches exactly one of these.
var (
	// ErrNotLeader: the contacted node is not the leader. The client follows
	// the hint itself; callers see it only when the retry budget runs out.
	ErrNotLeader = &sentinel{CodeNotLeader, "not leader"}
	// ErrNoLeader: no leader is known (an election is in progress).
	ErrNoLeader = &sentinel{CodeNoLeader, "no leader"}
	// ErrInvalidArgument: a request field is invalid. Never retried.
	ErrInvalidArgument = &sentinel{CodeInvalidArgument, "invalid argument"}
	// ErrOverloaded: the server's queues are full.
	ErrOverloaded = &sentinel{CodeOverloaded, "overloaded"}
	// ErrTimeout: the operation did not complete in time. For a write the
	// outcome is unknown: it may or may not have been applied.
	ErrTimeout = &sentinel{CodeTimeout, "timeout"}
	// ErrShuttingDown: the node is stopping.
	ErrShuttingDown = &sentinel{CodeShuttingDown, "shutting down"}
	// ErrStorage: the node's storage failed; it refuses writes.
	ErrStorage = &sentinel{CodeStorage, "storage failure"}
	// ErrChangeInProgress: a membership or leadership change is in progress.
	ErrChangeInProgress = &sentinel{CodeChangeInProgress, "change in progress"}
	// ErrCompacted: a watch's start revision is no longer in the history.
	// Error.CompactRevision names the oldest revision still available.
	ErrCompacted = &sentinel{CodeCompacted, "compacted"}
	// ErrUnauthenticated: authentication required or failed.
	ErrUnauthenticated = &sentinel{CodeUnauthenticated, "unauthenticated"}
	// ErrPermissionDenied: authenticated but not allowed.
	ErrPermissionDenied = &sentinel{CodePermissionDenied, "permission denied"}
	// ErrUnknownNode: an admin request named a node that is not a member.
	ErrUnknownNode = &sentinel{CodeUnknownNode, "unknown node"}
	// ErrNoSpace: the node's storage quota is reached; nothing was written.
	// Reads and deletes still work: delete keys or raise storage.quota_bytes.
	// Not retryable as is.
	ErrNoSpace = &sentinel{CodeNoSpace, "no space (storage quota reached)"}
	// ErrLeaseNotFound: the lease does not exist: never granted, revoked, or
	// expired (Error.Metadata["lease_id"] names it). Not retryable: grant a
	// new lease.
	ErrLeaseNotFound = &sentinel{CodeLeaseNotFound, "lease not found"}
	// ErrLeaseExpired: KeepAlive got no renewal acknowledged before the
	// lease's TTL ran out (cluster unreachable, no leader...): the lease must
	// be presumed gone, and with it the keys attached to it.
	ErrLeaseExpired = &sentinel{CodeLeaseExpired, "lease expired (no renewal acknowledged within its TTL)"}
	// ErrNotHeld: the lock or election leadership is not held any more (its
	// key is gone or belongs to another holder). Not retryable.
	ErrNotHeld = &sentinel{CodeNotHeld, "not held"}
	// ErrUnavailable: no endpoint could be reached.
	ErrUnavailable = &sentinel{CodeUnavailable, "unavailable"}
	// ErrCanceled: the caller's context was cancelled (also matches
	// context.Canceled).
	ErrCanceled = &sentinel{CodeCanceled, "canceled"}
	// ErrClosed: the Client was closed.
	ErrClosed = &sentinel{CodeClosed, "client closed"}
	// ErrWatchCanceled: the server ended a watch for a reason that has no
	// more specific code (a server that sent no cancel_code and no code
	// name in its reason); Error.Message has the reason.
	ErrWatchCanceled = &sentinel{CodeWatchCanceled, "watch canceled by server"}
	// ErrInternal: an error the client cannot classify.
	ErrInternal = &sentinel{CodeInternal, "internal error"}
)

// Error is the error returned for every failed operation. Use errors.Is with
// the Err* sentinels to test its class, or errors.As to read the details.
type Error struct {
	// Code classifies the error.
	Code Code
	// Message is the server's (or client's) human-readable explanation.
	Message string
	// GRPCCode is the gRPC status code, or codes.OK if the error did not come
	// from a gRPC status.
	GRPCCode codes.Code
	// Metadata is the ErrorInfo metadata (e.g. "field", "limit" for limits).
	Metadata map[string]string
	// Endpoint is the address of the node that answered last, if any.
	Endpoint string
	// CompactRevision is set with CodeCompacted: the oldest revision still
	// in the server's watch history (re-list, then watch from the list's
	// revision + 1). 0 when the server did not say.
	CompactRevision uint64
	// ResumeRevision is set on the error that ends a watch: the revision to
	// watch from again so that no change after the last delivered event is
	// missed (one past the last delivered event, or the watch's start
	// revision if none was delivered). 0 when unknown.
	ResumeRevision uint64

	notLeader *NotLeaderError
	cause     error
	// fromServer: the status carried a d-engine ErrorInfo (a handler's
	// answer, not a transport failure).
	fromServer bool
}

func (e *Error) Error() string {
	s := "d-engine: " + e.Code.String()
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.notLeader != nil && (e.notLeader.LeaderID != 0 || e.notLeader.LeaderAddr != "") {
		s += fmt.Sprintf(" (leader %d at %q)", e.notLeader.LeaderID, e.notLeader.LeaderAddr)
	}
	if e.Endpoint != "" {
		s += " [endpoint " + e.Endpoint + "]"
	}
	return s
}

// Is reports whether target is the sentinel of e's Code.
func (e *Error) Is(target error) bool {
	s, ok := target.(*sentinel)
	return ok && s.code == e.Code
}

// Unwrap exposes the *NotLeaderError detail (for errors.As) and the
// underlying cause (a context error or the gRPC status error).
func (e *Error) Unwrap() []error {
	var out []error
	if e.notLeader != nil {
		out = append(out, e.notLeader)
	}
	if e.cause != nil {
		out = append(out, e.cause)
	}
	return out
}

// NotLeaderError is the detail of a NOT_LEADER error: the node that answered
// is not the leader; LeaderID / LeaderAddr name the leader if it knows one
// (0 / "" otherwise). Reach it with errors.As.
type NotLeaderError struct {
	LeaderID   uint64
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == 0 && e.LeaderAddr == "" {
		return "d-engine: not leader (leader unknown)"
	}
	return fmt.Sprintf("d-engine: not leader (leader %d at %q)", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// IsRetryable reports whether retrying the same operation (after a backoff,
// possibly on another node) may succeed. The client already retries these
// itself within its retry policy.
func IsRetryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code.retryable()
}

func (c Code) retryable() bool {
	switch c {
	case CodeNotLeader, CodeNoLeader, CodeOverloaded, CodeUnavailable,
		CodeShuttingDown, CodeChangeInProgress, CodeTimeout:
		return true
	}
	return false
}

// FromStatus converts a gRPC error into an *Error. A d-engine ErrorInfo in the
// status details decides the Code (and, for NOT_LEADER, fills the
// *NotLeaderError from its "leader_id"/"leader_addr" metadata); otherwise the
// gRPC code is used. A nil err returns nil; an error that is not a gRPC status
// becomes CodeInternal (or CodeCanceled/CodeTimeout for context errors).
func FromStatus(err error) *Error {
	if err == nil {
		return nil
	}
	var de *Error
	if errors.As(err, &de) {
		return de
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: CodeCanceled, Message: err.Error(), GRPCCode: codes.Canceled, cause: err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: CodeTimeout, Message: err.Error(), GRPCCode: codes.DeadlineExceeded, cause: err}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: CodeInternal, Message: err.Error(), cause: err}
	}
	e := &Error{Code: codeFromGRPC(st.Code(), st.Message()), Message: st.Message(), GRPCCode: st.Code(), cause: err}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != ErrorDomain {
			continue
		}
		if c, known := codeFromReason(info.GetReason()); known {
			e.Code = c
		}
		e.fromServer = true
		e.Metadata = info.GetMetadata()
		// A watch refused at creation names where to continue from.
		if rev, perr := strconv.ParseUint(e.Metadata["compact_revision"], 10, 64); perr == nil && e.Code == CodeCompacted {
			e.CompactRevision = rev
		}
		if rev, perr := strconv.ParseUint(e.Metadata["resume_revision"], 10, 64); perr == nil {
			e.ResumeRevision = rev
		}
		break
	}
	if e.Code == CodeNotLeader {
		nl := &NotLeaderError{LeaderAddr: e.Metadata["leader_addr"]}
		if id, perr := strconv.ParseUint(e.Metadata["leader_id"], 10, 64); perr == nil {
			nl.LeaderID = id
		}
		e.notLeader = nl
	}
	return e
}

// newError builds a client-side *Error.
func newError(code Code, msg string, cause error) *Error {
	return &Error{Code: code, Message: msg, cause: cause}
}
