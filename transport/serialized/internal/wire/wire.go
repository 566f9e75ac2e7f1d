// Package wire holds the JSON bodies and header names of the Serialized
// Aggregates API, shared by the HTTP client and the local server so the two
// can never disagree on a field name.
package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/sourced-go/sourced/transport"
)

// Header names.
const (
	HeaderAccessKey          = "Serialized-Access-Key"
	HeaderSecretAccessKey    = "Serialized-Secret-Access-Key"
	HeaderTenantID           = "Serialized-Tenant-Id"
	HeaderRateLimitLimit     = "Serialized-RateLimit-Limit"
	HeaderRateLimitRemaining = "Serialized-RateLimit-Remaining"
	HeaderRateLimitReset     = "Serialized-RateLimit-Reset"
)

// LoadResponse is the body of GET /aggregates/{type}/{id}.
type LoadResponse struct {
	AggregateID      string            `json:"aggregateId"`
	AggregateType    string            `json:"aggregateType"`
	AggregateVersion int64             `json:"aggregateVersion"`
	Events           []transport.Event `json:"events"`
	HasMore          bool              `json:"hasMore"`
}

// LoadPage is the part of a LoadResponse that a client reads back: decoding
// into it skips the echoed id and type without allocating them.
type LoadPage struct {
	AggregateVersion int64             `json:"aggregateVersion"`
	Events           []transport.Event `json:"events"`
	HasMore          bool              `json:"hasMore"`
}

// StoreRequest is the body of POST /aggregates/{type}/{id}/events.
type StoreRequest struct {
	Events          []transport.Event `json:"events"`
	ExpectedVersion *Version          `json:"expectedVersion,omitempty"`
}

// BulkRequest is the body of POST /aggregates/{type}/events.
type BulkRequest struct {
	Batches []BulkBatch `json:"batches"`
}

// BulkBatch is one aggregate's batch in a BulkRequest.
type BulkBatch struct {
	AggregateID     string            `json:"aggregateId"`
	Events          []transport.Event `json:"events"`
	ExpectedVersion *Version          `json:"expectedVersion,omitempty"`
}

// DeleteResponse is the body of the first step of a delete.
type DeleteResponse struct {
	DeleteToken string `json:"deleteToken"`
}

// ListResponse is the body of GET /aggregates/{type}.
type ListResponse struct {
	Aggregates []ListItem `json:"aggregates"`
	HasMore    bool       `json:"hasMore"`
}

// ListItem is one aggregate in a ListResponse. LastUpdatedAt is epoch
// milliseconds.
type ListItem struct {
	AggregateID      string `json:"aggregateId"`
	AggregateType    string `json:"aggregateType"`
	AggregateVersion int64  `json:"aggregateVersion"`
	LastUpdatedAt    int64  `json:"lastUpdatedAt"`
}

// ErrorResponse is an error body: 422 carries Errors, 429 Code and Message.
type ErrorResponse struct {
	Errors  []string `json:"errors,omitempty"`
	Code    int      `json:"code,omitempty"`
	Message string   `json:"message,omitempty"`
}

// Version is an expectedVersion on the wire. It encodes as a JSON number and
// decodes from a number or a numeric string (the Java sample sends "0").
type Version int64

// MarshalJSON encodes v as a number.
func (v Version) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, int64(v), 10), nil
}

// UnmarshalJSON accepts 3 and "3".
func (v *Version) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 1 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(s)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("expectedVersion %q is not an integer", b)
	}
	*v = Version(n)
	return nil
}

// FromExpected returns the wire form: nil for transport.Any.
func FromExpected(e transport.ExpectedVersion) *Version {
	n, ok := e.Value()
	if !ok {
		return nil
	}
	v := Version(n)
	return &v
}

// ToExpected returns the port's form of a wire expectedVersion.
func ToExpected(v *Version) transport.ExpectedVersion {
	if v == nil {
		return transport.Any
	}
	return transport.Exactly(int64(*v))
}

// HeaderSequenceNumber is the header of HEAD /feeds/{feed}: the feed's
// current sequence number.
const HeaderSequenceNumber = "Serialized-SequenceNumber-Current"

// FeedResponse is the body of GET /feeds/{feed}.
type FeedResponse struct {
	Entries               []FeedEntry `json:"entries"`
	HasMore               bool        `json:"hasMore"`
	CurrentSequenceNumber int64       `json:"currentSequenceNumber"`
}

// FeedEntry is one stored batch in a FeedResponse. Timestamp is epoch
// milliseconds. FeedName is the aggregate type (the hosted service sends
// only that); AggregateType and AggregateVersion are this server's
// additions, which other clients ignore.
type FeedEntry struct {
	SequenceNumber   int64             `json:"sequenceNumber"`
	AggregateID      string            `json:"aggregateId"`
	Timestamp        int64             `json:"timestamp"`
	FeedName         string            `json:"feedName"`
	AggregateType    string            `json:"aggregateType,omitempty"`
	AggregateVersion int64             `json:"aggregateVersion,omitempty"`
	Events           []transport.Event `json:"events"`
}

// FeedsResponse is the body of GET /feeds.
type FeedsResponse struct {
	Feeds []FeedInfo `json:"feeds"`
}

// FeedInfo is one aggregate type in a FeedsResponse.
type FeedInfo struct {
	AggregateType  string `json:"aggregateType"`
	AggregateCount int64  `json:"aggregateCount"`
	BatchCount     int64  `json:"batchCount"`
	EventCount     int64  `json:"eventCount"`
}
