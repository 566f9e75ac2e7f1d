package backend

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized"
)

// openBackend picks the store: -api, or SERIALIZED_ACCESS_KEY set, means
// the HTTP API; otherwise the embedded memory store. remote names the API
// (host and port) for the views' file names, empty for memory.
func openBackend(f *Flags, getenv func(string) string) (tr transport.Transport, desc, remote string, err error) {
	access, secret := getenv(serialized.EnvAccessKey), getenv(serialized.EnvSecretKey)
	if f.API == "" && access == "" {
		return openMemory()
	}
	opts := []serialized.Option{serialized.WithKeys(access, secret)}
	base := f.API
	if base == "" {
		base = getenv(serialized.EnvBaseURL)
	}
	if base != "" {
		opts = append(opts, serialized.WithBaseURL(base))
	}
	client, err := serialized.New(opts...)
	if err != nil {
		return nil, "", "", err
	}
	host := "api"
	if u, err := url.Parse(client.BaseURL()); err == nil && u.Host != "" {
		host = strings.NewReplacer(":", "-", ".", "-").Replace(u.Host)
	}
	return client, fmt.Sprintf("Serialized API at %s", client.BaseURL()), host, nil
}
