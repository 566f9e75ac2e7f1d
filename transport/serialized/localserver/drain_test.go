package localserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// signalledFeed says when a feed read reaches the store.
type signalledFeed struct {
	*memory.Transport
	reading chan struct{}
}

func (s signalledFeed) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	select {
	case s.reading <- struct{}{}:
	default:
	}
	return s.Transport.ReadFeed(ctx, q)
}

// TestDrainAnswersWaitingFeedReads: a feed read waiting for 60 s answers
// with an empty page as soon as the drain channel closes, and one that
// arrives afterwards does not wait at all.
func TestDrainAnswersWaitingFeedReads(t *testing.T) {
	drain := make(chan struct{})
	store := signalledFeed{Transport: memory.New(), reading: make(chan struct{}, 1)}
	srv := httptest.NewServer(localserver.NewHandler(store, localserver.WithDrain(drain)))
	defer srv.Close()
	read := func() (int, []json.RawMessage) {
		res, err := http.Get(srv.URL + "/feeds/order?waitTime=60000")
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		var page struct {
			Entries []json.RawMessage `json:"entries"`
		}
		require.NoError(t, json.Unmarshal(b, &page), string(b))
		return res.StatusCode, page.Entries
	}
	type result struct {
		status  int
		entries []json.RawMessage
	}
	got := make(chan result, 1)
	go func() {
		s, e := read()
		got <- result{s, e}
	}()
	<-store.reading
	close(drain)
	select {
	case r := <-got:
		assert.Equal(t, http.StatusOK, r.status)
		assert.Empty(t, r.entries)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting feed read still waits after the drain")
	}
	go func() {
		s, e := read()
		got <- result{s, e}
	}()
	select {
	case r := <-got:
		assert.Equal(t, http.StatusOK, r.status)
	case <-time.After(10 * time.Second):
		t.Fatal("a feed read after the drain waits")
	}
}
