package console_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/transport/memory"
)

// Mount the console in a program of your own, behind the API's keys.
func ExampleNew() {
	c, err := console.New(memory.New(), console.WithKeys("access", "secret"))
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/console/")
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	fmt.Println(res.Request.URL.Path, res.StatusCode) // sent to sign in first
	// Output: /console/login 200
}
