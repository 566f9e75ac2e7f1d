package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// TestBadInputEverywhere calls every public entry point with nil, empty,
// oversized and invalid input: each returns a clear error, none panics.
func TestBadInputEverywhere(t *testing.T) {
	ctx := context.Background()
	huge := strings.Repeat("x", 1<<20)
	id := uuid.NewString()
	mem := memory.New()
	srv := localserver.NewServer(nil)
	defer srv.Close()
	client, err := serialized.New(serialized.WithBaseURL(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	repo := repository.New(mem, ledgers)
	var nilRepo *repository.Repository[ledger]
	unset := repository.New[ledger](nil, nil)
	bus := eventbus.New()
	defer bus.Close(ctx)
	tooMany := make([]transport.Event, transport.MaxBatchEvents+1)
	for i := range tooMany {
		tooMany[i] = transport.Event{EventType: "Appended"}
	}
	transports := map[string]transport.Transport{"memory": mem, "serialized": client, "faultinject(nil)": faultinject.Wrap(nil, nil)}

	type call struct {
		name string
		fn   func() error
	}
	calls := []call{
		{"aggregate.New empty name", func() error { _, err := aggregate.New[ledger](""); return err }},
		{"aggregate.New huge name", func() error { _, err := aggregate.New[ledger](huge); return err }},
		{"aggregate.New nil option", func() error { _, err := aggregate.New[ledger]("ledger", nil); return err }},
		{"Root.Record nil", func() error { return ledgers.New(id).Record(nil) }},
		{"Root.Replay empty", func() error { return ledgers.New(id).Replay("", nil) }},
		{"Root.Replay huge", func() error { return ledgers.New(id).Replay("Appended", []byte(huge)) }},
		{"repository.Load empty id", func() error { _, err := repo.Load(ctx, ""); return err }},
		{"repository.Load huge id", func() error { _, err := repo.Load(ctx, huge); return err }},
		{"repository.Update nil command", func() error { _, err := repo.Update(ctx, id, nil); return err }},
		{"repository.Create nil command", func() error { _, err := repo.Create(ctx, id, nil); return err }},
		{"repository.Save nil root", func() error { _, err := repo.Save(ctx, nil); return err }},
		{"repository on nil", func() error { _, err := nilRepo.Update(ctx, id, nil); return err }},
		{"repository without transport", func() error { _, err := unset.Exists(ctx, id); return err }},
		{"repository delete all without transport", func() error { _, err := unset.RequestDeleteAll(ctx); return err }},
		{"repository bad tenant", func() error { _, err := repo.ForTenant("acme").Exists(ctx, id); return err }},
		{"repository.ConfirmDelete empty token", func() error { return repo.ConfirmDelete(ctx, id, "") }},
		{"eventbus.Subscribe nil", func() error { _, err := eventbus.Subscribe[Appended](bus, nil); return err }},
		{"eventbus.SubscribeAll nil", func() error { _, err := eventbus.SubscribeAll(bus, nil); return err }},
		{"serialized.New bad URL", func() error { _, err := serialized.New(serialized.WithBaseURL("::")); return err }},
		{"serialized.New nil getenv", func() error { _, err := serialized.New(serialized.WithEnv(nil)); return err }},
	}
	for name, tr := range transports {
		tr := tr
		good := transport.Ref{Type: "ledger", ID: id}
		calls = append(calls,
			call{name + " Load zero ref", func() error { _, err := tr.Load(ctx, transport.Ref{}, 0, 0); return err }},
			call{name + " Load negative since", func() error { _, err := tr.Load(ctx, good, -1, 0); return err }},
			call{name + " Store nil events", func() error { return tr.Store(ctx, good, nil, transport.Any) }},
			call{name + " Store too many", func() error { return tr.Store(ctx, good, tooMany, transport.Any) }},
			call{name + " Store huge type", func() error {
				return tr.Store(ctx, good, []transport.Event{{EventType: huge}}, transport.Any)
			}},
			call{name + " Store huge encryptedData", func() error {
				return tr.Store(ctx, good, []transport.Event{{EventType: "Appended", EncryptedData: huge}}, transport.Any)
			}},
			call{name + " StoreBulk nil", func() error { return tr.StoreBulk(ctx, transport.Scope{Type: "ledger"}, nil) }},
			call{name + " Exists huge id", func() error { _, err := tr.Exists(ctx, transport.Ref{Type: "ledger", ID: huge}); return err }},
			call{name + " RequestDelete zero target", func() error { _, err := tr.RequestDelete(ctx, transport.DeleteTarget{}); return err }},
			call{name + " ConfirmDelete bad token", func() error {
				return tr.ConfirmDelete(ctx, transport.DeleteAggregate(good), huge)
			}},
		)
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var err error
			assert.NotPanics(t, func() { err = c.fn() })
			if assert.Error(t, err) {
				assert.Less(t, len(err.Error()), 2000, "a clear message, not the input echoed back")
				assert.NotContains(t, err.Error(), huge[:200])
			}
		})
	}

	// The server handler takes any request without a backend and without panicking.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/aggregates/ledger/"+id+"/events", strings.NewReader(huge))
	req.Header.Set("Content-Type", "application/json") // a keyless server answers loopback JSON writes only
	localserver.NewHandler(nil).ServeHTTP(rec, req)
	assert.Equal(t, http.StatusUnprocessableEntity, rec.Code)
}
