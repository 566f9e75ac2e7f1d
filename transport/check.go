package transport

import "fmt"

// The Check functions validate the arguments of each Transport method the
// same way for every transport: call one first and return its error as it
// is. Each returns an *Error wrapping ErrInvalid that names the operation
// and the aggregate.

// CheckLoad validates the arguments of Load.
func CheckLoad(ref Ref, since int64, limit int) error {
	const op = "load"
	if err := ref.Validate(); err != nil {
		return Wrap(err, op, ref, ErrInvalid)
	}
	if since < 0 || limit < 0 {
		return invalidOp(op, ref, "since and limit must not be negative")
	}
	return nil
}

// CheckStore validates the arguments of Store.
func CheckStore(ref Ref, events []Event, expected ExpectedVersion) error {
	const op = "store"
	if err := ref.Validate(); err != nil {
		return Wrap(err, op, ref, ErrInvalid)
	}
	return checkBatch(op, ref, events, expected)
}

// CheckStoreBulk validates the arguments of StoreBulk: a valid scope, at
// least one batch, unique valid ids, valid batches.
func CheckStoreBulk(scope Scope, batches []Batch) error {
	const op = "store bulk"
	sref := Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := scope.Validate(); err != nil {
		return Wrap(err, op, sref, ErrInvalid)
	}
	if len(batches) == 0 {
		return invalidOp(op, sref, "a bulk store needs at least one batch")
	}
	if len(batches) > MaxBulkBatches {
		return invalidOp(op, sref, fmt.Sprintf("a bulk store takes at most %d batches, got %d", MaxBulkBatches, len(batches)))
	}
	seen := make(map[string]struct{}, len(batches))
	for _, b := range batches {
		ref := Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}
		if err := ValidateID(b.AggregateID); err != nil {
			return Wrap(err, op, ref, ErrInvalid)
		}
		if _, dup := seen[b.AggregateID]; dup {
			return invalidOp(op, ref, "aggregate ids in one bulk store must be unique")
		}
		seen[b.AggregateID] = struct{}{}
		if err := checkBatch(op, ref, b.Events, b.Expected); err != nil {
			return err
		}
	}
	return nil
}

// CheckExists validates the argument of Exists.
func CheckExists(ref Ref) error {
	if err := ref.Validate(); err != nil {
		return Wrap(err, "exists", ref, ErrInvalid)
	}
	return nil
}

// CheckDelete validates a delete target for op ("request delete" or
// "confirm delete").
func CheckDelete(op string, target DeleteTarget) error {
	if err := target.Validate(); err != nil {
		return Wrap(err, op, target.Ref(), ErrInvalid)
	}
	return nil
}

// CheckList validates the arguments of List.
func CheckList(scope Scope, skip, limit int) error {
	const op = "list"
	sref := Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := scope.Validate(); err != nil {
		return Wrap(err, op, sref, ErrInvalid)
	}
	if skip < 0 || limit < 0 {
		return invalidOp(op, sref, "skip and limit must not be negative")
	}
	return nil
}

// PageLimit returns the number of items a page holds for a requested limit:
// MaxLimit for 0 or anything over it.
func PageLimit(limit int) int {
	if limit <= 0 || limit > MaxLimit {
		return MaxLimit
	}
	return limit
}

// Ref returns the aggregate reference of the target (ID empty for a whole
// type).
func (t DeleteTarget) Ref() Ref { return Ref{Tenant: t.Tenant, Type: t.Type, ID: t.ID} }

func checkBatch(op string, ref Ref, events []Event, expected ExpectedVersion) error {
	if err := ValidateEvents(events); err != nil {
		return Wrap(err, op, ref, ErrInvalid)
	}
	if !expected.Valid() {
		return invalidOp(op, ref, "expected version must not be negative")
	}
	return nil
}

func invalidOp(op string, ref Ref, msg string) *Error {
	e := NewError(op, ref, ErrInvalid)
	e.Messages = []string{msg}
	return e
}
