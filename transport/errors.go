package transport

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Every error a transport returns wraps exactly one of them,
// so errors.Is tells the kind of failure; errors.As with *Error gives the
// details.
var (
	// ErrConflict: the expected version did not match (HTTP 409).
	ErrConflict = errors.New("version conflict")
	// ErrNotFound: the aggregate does not exist (HTTP 404).
	ErrNotFound = errors.New("aggregate not found")
	// ErrUnauthorized: the access keys were missing or wrong (HTTP 401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrInvalid: a name, id or body was rejected (HTTP 400 or 422).
	ErrInvalid = errors.New("invalid request")
	// ErrRateLimited: too many requests (HTTP 429).
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: the store could not be reached or answered with a
	// server error (HTTP 5xx, connection failures).
	ErrUnavailable = errors.New("store unavailable")
	// ErrBadDeleteToken: the delete token is unknown, expired or was issued
	// for another target (HTTP 403).
	ErrBadDeleteToken = errors.New("bad or expired delete token")
	// ErrAmbiguous: a store request went out but its outcome is unknown
	// (for example a timeout after the body was sent). The batch may or may
	// not have been stored; reload to find out. Never resend blindly.
	ErrAmbiguous = errors.New("store outcome unknown")
)

// RateLimit carries the Serialized-RateLimit-* values of a response.
type RateLimit struct {
	Limit     int
	Remaining int
	// Reset is when the window resets (zero when unknown).
	Reset time.Time
}

// Error is the rich error every transport returns. It names the operation and
// the aggregate, and wraps a sentinel (Kind) and, optionally, a cause (Err).
// It never carries a secret.
type Error struct {
	// Op is the operation: "load", "store", "store bulk", "exists",
	// "request delete", "confirm delete", "list" or "validate".
	Op string
	// Tenant, AggregateType and AggregateID name the target where known.
	Tenant        string
	AggregateType string
	AggregateID   string
	// Kind is one of the sentinel errors of this package.
	Kind error
	// Expected is the expected version of a failed store.
	Expected ExpectedVersion
	// StatusCode is the HTTP status, for HTTP transports (0 otherwise).
	StatusCode int
	// Messages are the reasons given by the store (a 422's errors array)
	// or by validation.
	Messages []string
	// RateLimit is set on ErrRateLimited when the store said when to retry.
	RateLimit *RateLimit
	// Err is the underlying cause, if any.
	Err error
}

// Error formats the failure as "<op> <type>/<id> [tenant <t>]: <kind>: <details>".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.AggregateType != "" {
		b.WriteByte(' ')
		b.WriteString(short(e.AggregateType))
		if e.AggregateID != "" {
			b.WriteByte('/')
			b.WriteString(short(e.AggregateID))
		}
	}
	if e.Tenant != "" {
		b.WriteString(" [tenant ")
		b.WriteString(short(e.Tenant))
		b.WriteByte(']')
	}
	if e.Kind != nil {
		b.WriteString(": ")
		b.WriteString(e.Kind.Error())
	} else if e.Err == nil {
		b.WriteString(": failed")
	}
	if errors.Is(e.Kind, ErrConflict) && !e.Expected.IsAny() {
		fmt.Fprintf(&b, " (expected version %s)", e.Expected)
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if len(e.Messages) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(e.Messages, "; "))
	}
	if e.RateLimit != nil && !e.RateLimit.Reset.IsZero() {
		fmt.Fprintf(&b, " (resets at %s)", e.RateLimit.Reset.UTC().Format(time.RFC3339))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	switch {
	case e.Kind != nil && e.Err != nil:
		return []error{e.Kind, e.Err}
	case e.Kind != nil:
		return []error{e.Kind}
	case e.Err != nil:
		return []error{e.Err}
	}
	return nil
}

// WithRef returns a copy of e naming op and ref; it fills only the fields
// that are empty, so the innermost context wins.
func (e *Error) WithRef(op string, ref Ref) *Error {
	c := *e
	if c.Op == "" || c.Op == "validate" {
		c.Op = op
	}
	if c.Tenant == "" {
		c.Tenant = ref.Tenant
	}
	if c.AggregateType == "" {
		c.AggregateType = ref.Type
	}
	if c.AggregateID == "" {
		c.AggregateID = ref.ID
	}
	return &c
}

// NewError returns an *Error of kind for op on ref.
func NewError(op string, ref Ref, kind error) *Error {
	return &Error{Op: op, Tenant: ref.Tenant, AggregateType: ref.Type, AggregateID: ref.ID, Kind: kind}
}

// Wrap annotates err with op and ref. An *Error gets the missing fields
// filled in; any other error becomes the cause of a new *Error of kind.
// Wrap(nil, ...) returns nil.
func Wrap(err error, op string, ref Ref, kind error) error {
	if err == nil {
		return nil
	}
	var te *Error
	if errors.As(err, &te) {
		return te.WithRef(op, ref)
	}
	e := NewError(op, ref, kind)
	e.Err = err
	return e
}

// short keeps a name or id in a message readable: valid ones are at most
// 36 (ids) or a few dozen characters; anything longer is cut.
func short(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func invalidf(format string, args ...any) *Error {
	return &Error{Op: "validate", Kind: ErrInvalid, Messages: []string{fmt.Sprintf(format, args...)}}
}
