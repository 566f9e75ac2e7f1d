package localserver_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// FuzzRequest throws arbitrary methods, paths, tenants and bodies at the
// handler: it must never panic and never answer 5xx. The seed corpus runs
// in every go test; go test -fuzz=FuzzRequest explores further.
func FuzzRequest(f *testing.F) {
	id := "2c3cf88c-ee88-427e-818a-ab0267511c84"
	seeds := []struct{ method, path, tenant, body string }{
		{"POST", "/aggregates/order/" + id + "/events", "", `{"events":[{"eventType":"OrderPlaced","data":{"a":1}}],"expectedVersion":0}`},
		{"POST", "/aggregates/order/" + id + "/events", "", `{"events":[{"eventType":"OrderPlaced","eventId":"` + id + `","encryptedData":"x"}],"expectedVersion":"0"}`},
		{"POST", "/aggregates/order/" + id + "/events", "", `{"events":null}`},
		{"POST", "/aggregates/order/" + id + "/events", "", `{"events":[{"eventType":1}]}`},
		{"POST", "/aggregates/order/" + id + "/events", "", `{"events":[{}],"expectedVersion":1e99}`},
		{"POST", "/aggregates/order/" + id + "/events", "", `[]`},
		{"POST", "/aggregates/order/" + id + "/events", "", "\x00\xff"},
		{"POST", "/aggregates/order/events", "", `{"batches":[{"aggregateId":"` + id + `","events":[{"eventType":"OrderPlaced"}]}]}`},
		{"POST", "/aggregates/order/events", "", `{"batches":[{"aggregateId":null}]}`},
		{"GET", "/aggregates/order/" + id + "?since=99999999999999999999&limit=-0", "", ""},
		{"GET", "/aggregates/order?skip=9223372036854775807&limit=9223372036854775807", "", ""},
		{"DELETE", "/aggregates/order/" + id + "?deleteToken=%00", "", ""},
		{"HEAD", "/aggregates/o%2Fr/" + id, id, ""},
		{"GET", "/aggregates/order/" + id, "not-a-tenant", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.tenant, s.body)
	}
	h := localserver.NewHandler(memory.New(), localserver.WithAnyHost()) // any host: the fuzzer's requests reach the routes
	f.Fuzz(func(t *testing.T, method, path, tenant, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "http://local"+path, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if tenant != "" {
			req.Header.Set("Serialized-Tenant-Id", tenant)
		}
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %s with %q: status %d: %s", method, path, body, rec.Code, rec.Body.String())
		}
	})
}
