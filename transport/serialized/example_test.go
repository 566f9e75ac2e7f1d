package serialized_test

import (
	"context"
	"fmt"
	"os"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// Configure the client for the hosted service. NewFromEnv reads
// SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY; the keys never
// show when the client is printed.
func ExampleNew() {
	client, err := serialized.New(
		serialized.WithKeys(os.Getenv("SERIALIZED_ACCESS_KEY"), "my-secret-access-key"),
	)
	if err != nil {
		panic(err)
	}
	fmt.Println(client.BaseURL())
	// Output: https://api.serialized.io
}

// The same client talks to the local server, here on loopback.
func ExampleNew_localServer() {
	srv := localserver.NewServer(memory.New(), localserver.WithKeys("dev", "dev-secret"))
	defer srv.Close()
	client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys("dev", "dev-secret"))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	ref := transport.Ref{Type: "payment", ID: "2c3cf88c-ee88-427e-818a-ab0267511c84"}
	err = client.Store(ctx, ref, []transport.Event{{
		EventType: "PaymentProcessed",
		Data:      []byte(`{"paymentMethod":"CARD","amount":1000,"currency":"SEK"}`),
	}}, transport.MustNotExist)
	if err != nil {
		panic(err)
	}
	page, err := client.Load(ctx, ref, 0, 0)
	if err != nil {
		panic(err)
	}
	fmt.Println(page.Version, page.Events[0].EventType, string(page.Events[0].Data))
	// Output: 1 PaymentProcessed {"paymentMethod":"CARD","amount":1000,"currency":"SEK"}
}
