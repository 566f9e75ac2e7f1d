package main

import (
	"bytes"
	"context"
	"path/filepath"
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
		"the pay-orders subscription handled it",
		"fully paid=true, version 2",
		"refund stored at version 2",
		"refused:",
		"250.00 SEK by CARD, 125.00 refunded",
	} {
		assert.Contains(t, s, want)
	}
}

// TestSecondRunResumes runs the example twice over one -data file: the
// process resumes from its checkpoint, and the first run's order is not
// paid twice.
func TestSecondRunResumes(t *testing.T) {
	data := filepath.Join(t.TempDir(), "shop.db")
	none := func(string) string { return "" }
	var first, second bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-data", data}, none, &first))
	assert.NotContains(t, first.String(), "resuming")
	require.NoError(t, run(context.Background(), []string{"-data", data}, none, &second))
	assert.Contains(t, second.String(), "pay-orders process: resuming after sequence number")
	assert.Contains(t, second.String(), "fully paid=true, version 2")
}
