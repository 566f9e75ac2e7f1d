package transport

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/internal/naming"
)

// ValidateAggregateType checks an aggregate type name against the API's
// pattern ^[a-z0-9]+[a-z0-9\-_]+[a-z0-9]+$: at least three characters, lower
// case letters, digits, '-' and '_', starting and ending with a letter or
// digit.
func ValidateAggregateType(name string) error {
	if !naming.ValidAggregateType(name) {
		return invalidf("aggregate type %s must match %s and be at most 255 characters", clip(name), naming.AggregateTypePattern)
	}
	return nil
}

// ValidateEventType checks an event type name against the API's pattern
// ^[a-zA-Z0-9]+[a-zA-Z0-9\-_]+[a-zA-Z0-9]+$.
func ValidateEventType(name string) error {
	if !naming.ValidEventType(name) {
		return invalidf("event type %s must match %s", clip(name), naming.EventTypePattern)
	}
	return nil
}

// ValidateID checks that id is a UUID in its canonical 36-character form.
func ValidateID(id string) error {
	if !isUUID(id) {
		return invalidf("aggregate id %s is not a UUID", clip(id))
	}
	return nil
}

// ValidateTenant checks that a tenant id is empty (default tenant) or a UUID.
func ValidateTenant(tenant string) error {
	if tenant != "" && !isUUID(tenant) {
		return invalidf("tenant id %s is not a UUID", clip(tenant))
	}
	return nil
}

// ValidateEvents checks a batch before it is stored: 1 to MaxBatchEvents
// events, valid event types, event ids empty or UUIDs, data empty or one
// valid JSON value in UTF-8, encryptedData valid UTF-8 without NUL and
// within MaxEncryptedData (it travels as a JSON string, which cannot carry
// other bytes intact; encode binary ciphertext, base64 say). Every transport
// calls it (through CheckStore and CheckStoreBulk), so what one refuses all
// refuse.
func ValidateEvents(events []Event) error {
	if len(events) == 0 {
		return invalidf("a batch needs at least one event")
	}
	if len(events) > MaxBatchEvents {
		return invalidf("a batch holds at most %d events, got %d", MaxBatchEvents, len(events))
	}
	for i := range events {
		e := &events[i]
		if err := ValidateEventType(e.EventType); err != nil {
			return err
		}
		if e.EventID != "" && !isUUID(e.EventID) {
			return invalidf("event %d: eventId %s is not a UUID", i, clip(e.EventID))
		}
		if len(e.Data) > 0 && (!json.Valid(e.Data) || !utf8.Valid(e.Data)) {
			return invalidf("event %d (%s): data is not valid JSON in UTF-8", i, clip(e.EventType))
		}
		if !utf8.ValidString(e.EncryptedData) || strings.IndexByte(e.EncryptedData, 0) >= 0 {
			return invalidf("event %d (%s): encryptedData must be valid UTF-8 without NUL (encode binary, base64 say)", i, clip(e.EventType))
		}
		if len(e.EncryptedData) > MaxEncryptedData {
			return invalidf("event %d: encryptedData is %d bytes, at most %d allowed", i, len(e.EncryptedData), MaxEncryptedData)
		}
	}
	return nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

func clip(s string) string { return naming.Quote(s) }
