// Package naming checks names against the Serialized API's patterns. It is
// shared by package aggregate (which may import no other package of
// sourced) and package transport.
package naming

import "strconv"

// AggregateTypePattern is the pattern aggregate type names must match.
const AggregateTypePattern = `^[a-z0-9]+[a-z0-9\-_]+[a-z0-9]+$`

// EventTypePattern is the pattern event type names must match.
const EventTypePattern = `^[a-zA-Z0-9]+[a-zA-Z0-9\-_]+[a-zA-Z0-9]+$`

// MaxLength bounds every name: the API's patterns set none, and an
// unbounded name is never meant.
const MaxLength = 255

// ValidAggregateType reports whether s matches AggregateTypePattern.
func ValidAggregateType(s string) bool { return valid(s, false) }

// ValidEventType reports whether s matches EventTypePattern.
func ValidEventType(s string) bool { return valid(s, true) }

// valid checks the patterns by hand: at least three characters, letters
// (lower case only unless upper) and digits, with '-' and '_' allowed
// everywhere but first and last.
func valid(s string, upper bool) bool {
	if len(s) < 3 || len(s) > MaxLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case upper && c >= 'A' && c <= 'Z':
		case (c == '-' || c == '_') && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// Quote quotes a bad value for an error message, in ASCII and at most about
// 80 bytes, so a huge or binary input never becomes a huge message.
func Quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max]
	}
	q := strconv.QuoteToASCII(s)
	if len(q) > max+16 {
		q = q[:max+16] + "..."
	}
	return q
}
