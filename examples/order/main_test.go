package main

import (
	"bytes"
	"context"
	"path/filepath"
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
		"built from the start of the feed: 4 batches applied",
		"this order: ann, paid 1200.00 SEK of 1200.00 SEK, shipped",
		"all orders: 1, worth 1200.00 SEK",
	} {
		assert.Contains(t, s, want)
	}
}

// TestSecondRunPicksUp runs the example twice over one -data file: the
// second run's order list applies only the second run's batches.
func TestSecondRunPicksUp(t *testing.T) {
	data := filepath.Join(t.TempDir(), "shop.db")
	none := func(string) string { return "" }
	var first, second bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-data", data}, none, &first))
	assert.Contains(t, first.String(), "built from the start of the feed: 4 batches applied")
	assert.Contains(t, first.String(), "events in the local file")
	require.NoError(t, run(context.Background(), []string{"-data", data}, none, &second))
	assert.Contains(t, second.String(), "picked up after sequence number 4, where the last run stopped: 4 new batches applied")
	assert.Contains(t, second.String(), "all orders: 2, worth 2400.00 SEK, paid 2400.00 SEK, 2 shipped")
}

func TestRunRejectsUnknownFlags(t *testing.T) {
	var out bytes.Buffer
	assert.Error(t, run(context.Background(), []string{"-nope"}, func(string) string { return "" }, &out))
}

// TestANewStoreRebuildsTheList: a list kept for another store (a local
// server restarted on memory) is rebuilt, not trusted.
func TestANewStoreRebuildsTheList(t *testing.T) {
	views := t.TempDir()
	none := func(string) string { return "" }
	for i := range 2 {
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), []string{"-data", filepath.Join(t.TempDir(), "shop.db"), "-views", views}, none, &out))
		if i == 1 {
			assert.Contains(t, out.String(), "built from the start of the feed: 4 batches applied", "rebuilt, not trusted")
			assert.Contains(t, out.String(), "all orders: 1, worth 1200.00 SEK", "only the new store's order")
		}
	}
}
