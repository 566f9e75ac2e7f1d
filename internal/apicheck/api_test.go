package apicheck

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite api/stable.txt from the code (after an addition; say it in CHANGELOG.md)")

// Stable lists the packages whose exported API README's compatibility
// policy covers. A package marked experimental in its doc is not here.
var Stable = []string{
	"github.com/sourced-go/sourced/aggregate",
	"github.com/sourced-go/sourced/aggregate/aggregatetest",
	"github.com/sourced-go/sourced/eventbus",
	"github.com/sourced-go/sourced/repository",
	"github.com/sourced-go/sourced/snapshot",
	"github.com/sourced-go/sourced/subscription",
	"github.com/sourced-go/sourced/transport",
	"github.com/sourced-go/sourced/transport/bolt",
	"github.com/sourced-go/sourced/transport/memory",
	"github.com/sourced-go/sourced/transport/serialized",
	"github.com/sourced-go/sourced/transport/serialized/localserver",
	"github.com/sourced-go/sourced/transport/transporttest",
}

// TestStableAPI fails when the exported API of a stable package differs
// from api/stable.txt: a removed or changed line is a breaking change (a
// new major version), an added line needs the file and the changelog
// updated (go test ./internal/apicheck -update).
func TestStableAPI(t *testing.T) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	file := filepath.Join(root, "api", "stable.txt")
	got, err := Lines(root, Stable)
	require.NoError(t, err)
	if *update {
		require.NoError(t, os.WriteFile(file, []byte(strings.Join(got, "\n")+"\n"), 0o644))
		return
	}
	raw, err := os.ReadFile(file)
	require.NoError(t, err, "api/stable.txt is missing: go test ./internal/apicheck -update")
	want := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		want[l] = true
	}
	have := map[string]bool{}
	var added []string
	for _, l := range got {
		have[l] = true
		if !want[l] {
			added = append(added, l)
		}
	}
	var removed []string
	for l := range want {
		if !have[l] {
			removed = append(removed, l)
		}
	}
	if len(removed) > 0 {
		t.Errorf("breaking change: these lines of api/stable.txt are gone from the code (removed or changed; that needs a new major version, said in CHANGELOG.md):\n%s", strings.Join(removed, "\n"))
	}
	if len(added) > 0 {
		t.Errorf("API added: record it with `go test ./internal/apicheck -update` and add it to CHANGELOG.md under Unreleased:\n%s", strings.Join(added, "\n"))
	}
}
