package transport

import (
	"context"
	"hash/fnv"
	"time"
)

// AllTypes is the name of the feed that holds every aggregate type's batches
// (the API's /feeds/_all). It can never clash with an aggregate type: type
// names cannot start with an underscore.
const AllTypes = "_all"

// MaxFeedWait is the longest a feed read may wait for a batch (the API's
// waitTime cap of 60,000 ms).
const MaxFeedWait = 60 * time.Second

// Feeder is implemented by transports that expose the ordered stream of every
// stored batch: the feed that read models and reactions follow. It is
// optional, like Lister: callers check for it with a type assertion.
//
// Sequence numbers are positive, unique within a tenant and only rise:
// once a reader has seen sequence number N, no batch with a number at or
// below N can appear later. One aggregate's batches are numbered in
// version order; across aggregates the order is the transport's (commit
// order in memory and bolt, and in postgres too, by numbering run). A transport must make that true
// even when writers commit concurrently, because a reader that has moved
// past a number never looks back. A batch is in the feed when the Store
// (or StoreBulk) that wrote it returns. The feed of one aggregate type
// carries the same numbers as AllTypes, so they rise but may skip.
type Feeder interface {
	// ReadFeed returns the entries after q.Since (exclusive), oldest first,
	// at most q.Limit of them. When none are there yet and q.Wait > 0, it
	// waits up to q.Wait (or until ctx ends) for the next batch to commit,
	// then answers, possibly with no entries.
	ReadFeed(ctx context.Context, q FeedQuery) (FeedPage, error)

	// FeedHead returns the highest sequence number given to a batch of feed
	// (feed.Type is an aggregate type or AllTypes), 0 when none was. Deletes
	// never lower it: numbers are never reused, so the head may stand above
	// every entry still readable. A reader that wants to know whether it has
	// read everything looks at FeedPage.HasMore, not at the head.
	FeedHead(ctx context.Context, feed Scope) (int64, error)

	// FeedOverview returns, for each aggregate type of tenant that has
	// stored batches, how many aggregates, batches and events it holds,
	// ordered by type.
	FeedOverview(ctx context.Context, tenant string) ([]FeedInfo, error)
}

// FeedQuery says which part of a feed ReadFeed returns.
type FeedQuery struct {
	// Feed names the tenant and the feed: an aggregate type or AllTypes.
	Feed Scope
	// Since is the sequence number after which entries are returned
	// (exclusive); 0 starts at the beginning.
	Since int64
	// Limit is the most entries returned: 0 means DefaultLimit; at most
	// MaxLimit.
	Limit int
	// Partition, when its Count is above 1, keeps only the entries of
	// aggregates whose id falls in partition Number (see PartitionOf).
	Partition Partition
	// EventTypes, when not empty, keeps only the entries that hold at least
	// one event of these types. Kept entries are whole.
	EventTypes []string
	// Wait is how long an empty read waits for the next batch: 0 answers at
	// once; at most MaxFeedWait.
	Wait time.Duration
}

// Partition splits a feed by aggregate id so that several consumers share
// it: every aggregate's batches go to exactly one partition, in order.
type Partition struct {
	// Count is the number of partitions; 0 or 1 means the whole feed.
	Count int
	// Number is the partition read, from 0 to Count-1.
	Number int
}

// Holds reports whether the aggregate with id belongs to the partition.
func (p Partition) Holds(aggregateID string) bool {
	if p.Count <= 1 {
		return true
	}
	return PartitionOf(aggregateID, p.Count) == p.Number
}

// PartitionOf returns the partition, from 0 to count-1, that holds the
// aggregate with id: the 32-bit FNV-1a hash of the id's text modulo count.
// Every transport uses this function, so partitions mean the same on all.
func PartitionOf(aggregateID string, count int) int {
	if count <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(aggregateID))
	return int(h.Sum32() % uint32(count))
}

// FeedEntry is one stored batch as a feed returns it: whole, with where and
// when it was stored.
type FeedEntry struct {
	// Sequence is the entry's sequence number in the tenant's feeds.
	Sequence      int64
	AggregateType string
	AggregateID   string
	// Version is the aggregate version the batch created, or 0 when the
	// store does not say (the hosted Serialized API does not).
	Version int64
	// Stored is when the batch was stored.
	Stored time.Time
	// Events are the batch's events in stored order. Their Data may be
	// shared with the transport: treat it as read-only.
	Events []Event
}

// FeedPage is one answer of ReadFeed.
type FeedPage struct {
	// Entries are in sequence order.
	Entries []FeedEntry
	// HasMore is true when entries after the last returned one exist.
	HasMore bool
	// Head is the feed's current sequence number (see FeedHead) as of the
	// read.
	Head int64
}

// FeedInfo describes one aggregate type in a FeedOverview.
type FeedInfo struct {
	AggregateType string
	Aggregates    int64
	Batches       int64
	Events        int64
}

// ValidateFeedName checks a feed name: an aggregate type or AllTypes.
func ValidateFeedName(name string) error {
	if name == AllTypes {
		return nil
	}
	return ValidateAggregateType(name)
}

// CheckFeed validates a feed query: a valid tenant and feed name, since not
// negative, limit from 0 to MaxLimit, a partition number below a positive
// count, valid event types, and a wait from 0 to MaxFeedWait.
func CheckFeed(q FeedQuery) error {
	const op = "read feed"
	ref := Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := checkFeedScope(op, q.Feed); err != nil {
		return err
	}
	switch {
	case q.Since < 0:
		return invalidOp(op, ref, "since must not be negative")
	case q.Limit < 0 || q.Limit > MaxLimit:
		return invalidOp(op, ref, "limit must be from 0 to 1000")
	case q.Partition.Count < 0:
		return invalidOp(op, ref, "partition count must not be negative")
	case q.Partition.Number < 0 || (q.Partition.Count > 0 && q.Partition.Number >= q.Partition.Count) || (q.Partition.Count == 0 && q.Partition.Number != 0):
		return invalidOp(op, ref, "partition number must be from 0 to partition count - 1")
	case q.Wait < 0 || q.Wait > MaxFeedWait:
		return invalidOp(op, ref, "wait must be from 0 to 60s")
	}
	for _, et := range q.EventTypes {
		if err := ValidateEventType(et); err != nil {
			return Wrap(err, op, ref, ErrInvalid)
		}
	}
	return nil
}

// CheckFeedHead validates the argument of FeedHead.
func CheckFeedHead(feed Scope) error { return checkFeedScope("feed head", feed) }

// CheckFeedOverview validates the argument of FeedOverview.
func CheckFeedOverview(tenant string) error {
	if err := ValidateTenant(tenant); err != nil {
		return Wrap(err, "feed overview", Ref{Tenant: tenant}, ErrInvalid)
	}
	return nil
}

func checkFeedScope(op string, feed Scope) error {
	ref := Ref{Tenant: feed.Tenant, Type: feed.Type}
	if err := ValidateTenant(feed.Tenant); err != nil {
		return Wrap(err, op, ref, ErrInvalid)
	}
	if err := ValidateFeedName(feed.Type); err != nil {
		return Wrap(err, op, ref, ErrInvalid)
	}
	return nil
}

// Matches reports whether the entry passes the query's partition and event
// type filter (not its since or limit).
func (q FeedQuery) Matches(e *FeedEntry) bool {
	if q.Feed.Type != AllTypes && e.AggregateType != q.Feed.Type {
		return false
	}
	if !q.Partition.Holds(e.AggregateID) {
		return false
	}
	if len(q.EventTypes) == 0 {
		return true
	}
	for i := range e.Events {
		for _, t := range q.EventTypes {
			if e.Events[i].EventType == t {
				return true
			}
		}
	}
	return false
}
