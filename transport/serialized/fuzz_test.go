package serialized_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized"
)

// FuzzLoadResponse has a server answer a load with arbitrary bytes: the
// client must never panic, and a body it cannot read is ErrUnavailable.
func FuzzLoadResponse(f *testing.F) {
	for _, s := range []string{page, `{}`, `{"events":null}`, `{"events":[{"data":`, `[]`, `null`, "\xff",
		`{"aggregateVersion":"1"}`, `{"events":[{"eventType":1}]}`, `{"hasMore":true,"aggregateVersion":-5}`} {
		f.Add([]byte(s))
	}
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(*body.Load())
	}))
	defer srv.Close()
	c, err := serialized.New(serialized.WithBaseURL(srv.URL), zeroRetry(0))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body.Store(&b)
		_, err := c.Load(context.Background(), transport.Ref{Type: "order", ID: "2c3cf88c-ee88-427e-818a-ab0267511c84"}, 0, 0)
		if err != nil && !errors.Is(err, transport.ErrUnavailable) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
