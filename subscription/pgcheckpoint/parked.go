package pgcheckpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/transport"
)

// Parked is one entry a handler could not handle.
type Parked struct {
	// Subscription is the name of the subscription that parked it.
	Subscription string
	// Entry is the entry, as the feed returned it.
	Entry transport.FeedEntry
	// Error is the handler's error text.
	Error string
	// Parked is when it was parked (the database's clock).
	Parked time.Time
}

// ErrNotParked: Retry or Discard named an entry that is not parked.
var ErrNotParked = errors.New("pgcheckpoint: no such parked entry")

// storedEntry keeps an entry byte for byte: Data and EncryptedData as
// bytes (base64 in the JSON), since raw JSON would be compacted and
// EncryptedData need not be UTF-8.
type storedEntry struct {
	Sequence      int64         `json:"sequence"`
	AggregateType string        `json:"aggregateType"`
	AggregateID   string        `json:"aggregateId"`
	Version       int64         `json:"version"`
	Stored        time.Time     `json:"stored"`
	Events        []storedEvent `json:"events"`
}

type storedEvent struct {
	EventID       string `json:"eventId"`
	EventType     string `json:"eventType"`
	Data          []byte `json:"data,omitempty"` // base64: json.Marshal would compact raw JSON
	EncryptedData []byte `json:"encryptedData,omitempty"`
}

func encodeEntry(e transport.FeedEntry) ([]byte, error) {
	se := storedEntry{Sequence: e.Sequence, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
		Version: e.Version, Stored: e.Stored, Events: make([]storedEvent, len(e.Events))}
	for i, ev := range e.Events {
		se.Events[i] = storedEvent{EventID: ev.EventID, EventType: ev.EventType, Data: ev.Data}
		if ev.EncryptedData != "" {
			se.Events[i].EncryptedData = []byte(ev.EncryptedData)
		}
	}
	return json.Marshal(se)
}

func decodeEntry(b []byte) (transport.FeedEntry, error) {
	var se storedEntry
	if err := json.Unmarshal(b, &se); err != nil {
		return transport.FeedEntry{}, err
	}
	e := transport.FeedEntry{Sequence: se.Sequence, AggregateType: se.AggregateType, AggregateID: se.AggregateID,
		Version: se.Version, Stored: se.Stored, Events: make([]transport.Event, len(se.Events))}
	for i, ev := range se.Events {
		e.Events[i] = transport.Event{EventID: ev.EventID, EventType: ev.EventType, Data: json.RawMessage(ev.Data), EncryptedData: string(ev.EncryptedData)}
	}
	return e, nil
}

// Park implements subscription.Parker: the entry and the error are kept
// under the subscription's name until Retry or Discard. It checks the
// view's fence: a member that lost the partition parks nothing.
func (s *Store) Park(ctx context.Context, name string, entry transport.FeedEntry, cause error) error {
	data, err := encodeEntry(entry)
	if err != nil {
		return err
	}
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.checkFence(ctx, tx, s.fence); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+s.s+".parked (name, seq, entry, error) VALUES ($1, $2, $3, $4) "+
			"ON CONFLICT (name, seq) DO UPDATE SET error = excluded.error, parked_at = now()", name, entry.Sequence, data, msg)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgcheckpoint: parking sequence number %d of %q: %w", entry.Sequence, name, err)
	}
	return nil
}

// ListParked returns the entries parked by the subscription called name
// (with its partition suffix, as Subscription.Name gives it), in sequence
// order.
func (s *Store) ListParked(ctx context.Context, name string) ([]Parked, error) {
	rows, err := s.pool.Query(ctx, "SELECT seq, entry, error, parked_at FROM "+s.s+".parked WHERE name = $1 ORDER BY seq", name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Parked
	for rows.Next() {
		var seq int64
		var data []byte
		p := Parked{Subscription: name}
		if err := rows.Scan(&seq, &data, &p.Error, &p.Parked); err != nil {
			return nil, err
		}
		if p.Entry, err = decodeEntry(data); err != nil {
			return nil, fmt.Errorf("pgcheckpoint: parked entry %d of %q: %w", seq, name, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Retry hands a parked entry to fn (for example the function given to
// Apply) in one transaction that also removes it from the parked entries:
// the entry is applied once, or stays parked when fn fails.
func (s *Store) Retry(ctx context.Context, name string, sequence int64, fn func(ctx context.Context, tx pgx.Tx, entry transport.FeedEntry) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		e, err := s.TakeParked(ctx, tx, name, sequence)
		if err != nil {
			return err
		}
		return fn(ctx, tx, e)
	})
}

// Discard removes a parked entry without handling it.
func (s *Store) Discard(ctx context.Context, name string, sequence int64) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM "+s.s+".parked WHERE name = $1 AND seq = $2", name, sequence)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %q sequence number %d", ErrNotParked, name, sequence)
	}
	return nil
}
