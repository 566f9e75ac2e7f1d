package transport

import (
	"context"
	"encoding/json"
	"time"
)

// Limits shared by every transport, taken from the Serialized Aggregates API.
const (
	// DefaultLimit is the number of batches Load returns when limit is 0.
	DefaultLimit = 1000
	// MaxLimit is the largest number of batches one Load returns.
	MaxLimit = 1000
	// MaxBatchEvents is the largest number of events in one stored batch
	// (the cap the official Java client applies).
	MaxBatchEvents = 64
	// MaxEncryptedData is the largest encryptedData value, in bytes.
	MaxEncryptedData = 65535
	// DeleteTokenTTL is how long a delete token stays valid.
	DeleteTokenTTL = 10 * time.Minute
	// MaxPageBytes bounds a page of Load or ReadFeed in bytes as well as in
	// batches: a transport stops adding batches to a page once their events'
	// EventType, Data and EncryptedData together would pass it, and sets
	// HasMore. A page always holds at least one batch, so a single batch
	// larger than the bound is still returned whole.
	MaxPageBytes = 4 << 20
	// MaxBulkBatches is the largest number of batches one StoreBulk takes.
	MaxBulkBatches = 1000
)

// EventBytes is what an event counts towards MaxPageBytes: the lengths of
// its EventType, Data and EncryptedData.
func EventBytes(e *Event) int { return len(e.EventType) + len(e.Data) + len(e.EncryptedData) }

// Transport stores and loads the events of aggregates. Implementations must
// be safe for concurrent use. Every method validates its input and returns an
// *Error wrapping ErrInvalid before doing anything for bad names or ids.
//
// Event.Data slices returned by Load and ReadFeed may be shared with the
// transport's own storage: callers must treat them as read-only. Everything
// else a page holds (its slices of events and entries, their strings) is the
// caller's: changing it never changes what a later read returns. Data and
// EncryptedData come back byte for byte as stored.
type Transport interface {
	// Load returns the batches stored after version since (exclusive), at
	// most limit of them (0 means DefaultLimit; more than MaxLimit is
	// capped). Page.Version is the version reached by the returned page.
	// It returns ErrNotFound when the aggregate does not exist.
	Load(ctx context.Context, ref Ref, since int64, limit int) (Page, error)

	// Store appends events as one batch, atomically, if expected matches
	// the current version; otherwise it returns ErrConflict. events must
	// hold between 1 and MaxBatchEvents events.
	Store(ctx context.Context, ref Ref, events []Event, expected ExpectedVersion) error

	// StoreBulk appends one batch to each of several aggregates of one type
	// and tenant, all or none. Aggregate ids must be unique in the call.
	StoreBulk(ctx context.Context, scope Scope, batches []Batch) error

	// Exists reports whether the aggregate has at least one stored batch.
	Exists(ctx context.Context, ref Ref) (bool, error)

	// RequestDelete returns a token that ConfirmDelete accepts for the same
	// target within DeleteTokenTTL. Nothing is deleted yet.
	RequestDelete(ctx context.Context, target DeleteTarget) (string, error)

	// ConfirmDelete deletes the target for good. An unknown or expired
	// token, or one issued for another target, returns ErrBadDeleteToken.
	ConfirmDelete(ctx context.Context, target DeleteTarget, token string) error
}

// Lister is implemented by transports that can list the aggregates of a
// type. It is optional: callers check for it with a type assertion.
type Lister interface {
	// List returns aggregates of scope's type ordered by id, skipping skip
	// and returning at most limit (0 means DefaultLimit).
	List(ctx context.Context, scope Scope, skip, limit int) (ListPage, error)
}

// Event is one stored event as it travels on the wire.
type Event struct {
	// EventID is a UUID. Store assigns one when it is empty.
	EventID string `json:"eventId,omitempty"`
	// EventType names the event; see ValidateEventType.
	EventType string `json:"eventType"`
	// Data is the JSON-encoded payload, passed through untouched.
	Data json.RawMessage `json:"data,omitempty"`
	// EncryptedData is an opaque string of at most MaxEncryptedData bytes,
	// passed through untouched.
	EncryptedData string `json:"encryptedData,omitempty"`
}

// Ref addresses one aggregate of one tenant.
type Ref struct {
	// Tenant is a UUID, or empty for the default tenant.
	Tenant string
	// Type is the aggregate type; see ValidateAggregateType.
	Type string
	// ID is the aggregate id, a UUID.
	ID string
}

// Scope addresses every aggregate of one type of one tenant.
type Scope struct {
	Tenant string
	Type   string
}

// Scope returns the scope that holds ref.
func (r Ref) Scope() Scope { return Scope{Tenant: r.Tenant, Type: r.Type} }

// Validate reports whether ref names a valid tenant, type and id.
func (r Ref) Validate() error {
	if err := ValidateTenant(r.Tenant); err != nil {
		return err
	}
	if err := ValidateAggregateType(r.Type); err != nil {
		return err
	}
	return ValidateID(r.ID)
}

// Validate reports whether scope names a valid tenant and type.
func (s Scope) Validate() error {
	if err := ValidateTenant(s.Tenant); err != nil {
		return err
	}
	return ValidateAggregateType(s.Type)
}

// Page is one page of a Load.
type Page struct {
	// Events of the returned batches, in stored order.
	Events []Event
	// Version is the aggregate version reached by this page (the version
	// of its last batch; since when the page is empty).
	Version int64
	// HasMore is true when batches after Version exist.
	HasMore bool
}

// Batch is one aggregate's share of a StoreBulk call.
type Batch struct {
	AggregateID string
	Events      []Event
	Expected    ExpectedVersion
}

// AggregateInfo describes one aggregate in a List.
type AggregateInfo struct {
	AggregateID      string
	AggregateType    string
	AggregateVersion int64
	LastUpdatedAt    time.Time
}

// ListPage is one page of a List.
type ListPage struct {
	Aggregates []AggregateInfo
	HasMore    bool
}

// DeleteTarget names what a two-step delete removes: one aggregate, or every
// aggregate of a type. Build it with DeleteAggregate or DeleteAllOfType so
// that a missing id never widens a delete by accident.
type DeleteTarget struct {
	Tenant string
	Type   string
	// ID is the aggregate id; empty exactly when AllOfType is true.
	ID string
	// AllOfType deletes every aggregate of Type.
	AllOfType bool
}

// DeleteAggregate targets one aggregate.
func DeleteAggregate(ref Ref) DeleteTarget {
	return DeleteTarget{Tenant: ref.Tenant, Type: ref.Type, ID: ref.ID}
}

// DeleteAllOfType targets every aggregate of scope's type.
func DeleteAllOfType(scope Scope) DeleteTarget {
	return DeleteTarget{Tenant: scope.Tenant, Type: scope.Type, AllOfType: true}
}

// Validate reports whether the target is well formed: valid names, and an id
// present exactly when the target is a single aggregate.
func (t DeleteTarget) Validate() error {
	if err := (Scope{Tenant: t.Tenant, Type: t.Type}).Validate(); err != nil {
		return err
	}
	if t.AllOfType {
		if t.ID != "" {
			return invalidf("delete target: an id and AllOfType were both given")
		}
		return nil
	}
	return ValidateID(t.ID)
}

// String names the target for logs and errors, as "order" or "order/<id>".
func (t DeleteTarget) String() string {
	if t.AllOfType {
		return t.Type
	}
	return t.Type + "/" + t.ID
}
