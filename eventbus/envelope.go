package eventbus

import "encoding/json"

// Envelope is one committed event as the bus delivers it: the payload with
// where it was stored.
type Envelope struct {
	// Tenant is the tenant id, empty for the default tenant.
	Tenant        string
	AggregateType string
	AggregateID   string
	// Version is the aggregate version of the batch that holds the event.
	Version   int64
	EventID   string
	EventType string
	// Data is the JSON-encoded payload as stored.
	Data json.RawMessage
	// Value is the Go value that was recorded, when the event was published
	// by a repository in this process; nil otherwise. Typed subscribers use
	// it to skip decoding Data.
	Value any
}
