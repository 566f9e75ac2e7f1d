package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunTellsTheStory(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, func(string) string { return "" }, &out))
	s := out.String()
	for _, want := range []string{
		"bus: payment PaymentProcessed v1 published",
		"fully paid=true, version 2",
		"refund stored at version 2",
		"refused:",
		"250.00 SEK by CARD, 125.00 refunded",
	} {
		assert.Contains(t, s, want)
	}
}
