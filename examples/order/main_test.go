package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunTellsTheWholeStory(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, func(string) string { return "" }, &out))
	s := out.String()
	for _, want := range []string{
		"embedded in-memory store",
		"stored OrderPlaced: 1 event(s), now at version 1",
		"refused: update order/",
		"clerk A, attempt 2: sees version 3",
		"the customer was charged once, not twice",
		"nothing to do: 0 events stored, still at version 4",
		"version 4: paid 1200.00 SEK of 1200.00 SEK, shipped=true",
		"The stored history (5 events in 4 batches)",
	} {
		assert.Contains(t, s, want)
	}
}

func TestRunRejectsUnknownFlags(t *testing.T) {
	var out bytes.Buffer
	assert.Error(t, run(context.Background(), []string{"-nope"}, func(string) string { return "" }, &out))
}
