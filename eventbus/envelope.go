package eventbus

import (
	"encoding/json"
	"time"
)

// Envelope is one committed event as the bus delivers it: the payload with
// where it was stored.
type Envelope struct {
	// Tenant is the tenant id, empty for the default tenant.
	Tenant        string
	AggregateType string
	AggregateID   string
	// Version is the aggregate version of the batch that holds the event
	// (0 when a feed read from the hosted Serialized API does not say).
	Version int64
	// Sequence is the feed sequence number of the batch, for events
	// delivered by a durable subscription; 0 on the bus.
	Sequence int64
	// Stored is when the batch was stored, for events delivered by a
	// durable subscription; zero on the bus.
	Stored    time.Time
	EventID   string
	EventType string
	// Data is the JSON-encoded payload as stored.
	Data json.RawMessage
	// Value is the Go value that was recorded, when the event was published
	// by a repository in this process; nil otherwise. Typed subscribers use
	// it to skip decoding Data.
	Value any
}
