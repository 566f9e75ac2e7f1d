package docs_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// normalize folds white space so indentation and alignment do not matter.
func normalize(lines []string) []string {
	var out []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, strings.Join(f, " "))
		}
	}
	return out
}

// goBlocks returns the ```go blocks of a Markdown file.
func goBlocks(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var blocks [][]string
	var cur []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.TrimSpace(line) == "```go":
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			cur = append(cur, line)
		}
	}
	require.NoError(t, sc.Err())
	require.False(t, in, "%s: unclosed code block", path)
	return blocks
}

func contains(hay, needle []string) bool {
	for i := 0; i+len(needle) <= len(hay); i++ {
		ok := true
		for j := range needle {
			if hay[i+j] != needle[j] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestDocBlocksCompile: every Go block in README.md and docs/*.md stands,
// line for line, in snippets_test.go or a *_snippets_test.go file, which
// the compiler checks.
func TestDocBlocksCompile(t *testing.T) {
	// snippets_test.go, and the *_snippets_test.go files beside it.
	files, err := filepath.Glob("*snippets_test.go")
	require.NoError(t, err)
	var compiled, compiledImports []string
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		compiled = append(compiled, normalize(strings.Split(string(src), "\n"))...)
		imports, _ := splitImports(strings.Split(strings.SplitN(string(src), "import (", 2)[1], "\n"))
		compiledImports = append(compiledImports, imports...)
	}
	docs, err := filepath.Glob("*.md")
	require.NoError(t, err)
	docs = append(docs, filepath.Join("..", "README.md"))
	checked := 0
	for _, d := range docs {
		for i, b := range goBlocks(t, d) {
			imports, body := splitImports(b)
			for _, imp := range imports {
				assert.Contains(t, compiledImports, imp, "%s: Go block %d imports %s, which snippets_test.go does not", d, i+1, imp)
			}
			n := normalize(body)
			if len(n) == 0 {
				continue
			}
			checked++
			assert.True(t, contains(compiled, n), "%s: Go block %d is not in snippets_test.go:\n%s", d, i+1, strings.Join(b, "\n"))
			for _, q := range usedPackages(n) {
				assert.Contains(t, importedNames(imports), q, "%s: Go block %d uses package %s without showing its import", d, i+1, q)
			}
		}
	}
	assert.GreaterOrEqual(t, checked, 5, "the documentation has Go blocks to check")
}

// The snippets run, not only compile.
func TestSnippetsRun(t *testing.T) {
	ctx := context.Background()
	res, err := readme(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), res.Version)
	require.NoError(t, gettingStarted())
	transportsLocal()

	// Step 5 of getting started, against a local server as the page says.
	srv := localserver.NewServer(memory.New())
	defer srv.Close()
	t.Setenv("SERIALIZED_BASE_URL", srv.URL)
	t.Setenv("SERIALIZED_ACCESS_KEY", "")
	t.Setenv("SERIALIZED_SECRET_ACCESS_KEY", "")
	require.NoError(t, gettingStartedHTTP(), "a loopback base URL needs no keys")

	store := memory.New()
	repo := repository.New(store, accounts)
	id := uuid.NewString()
	_, err = repo.Create(ctx, id, Open("ann"))
	require.NoError(t, err)
	conceptsErrors(ctx, repo, id)
	require.NoError(t, conceptsBus(ctx, store))
	operations(zap.NewNop(), store)
}

// splitImports takes the import block a Go block may start with and returns
// its import paths (quoted, with any name before them) and the lines after.
func splitImports(block []string) (imports []string, body []string) {
	i := 0
	for i < len(block) && strings.TrimSpace(block[i]) == "" {
		i++
	}
	if i < len(block) && strings.TrimSpace(block[i]) == "import (" {
		i++
	} else if i >= len(block) || !strings.HasPrefix(strings.TrimSpace(block[i]), `"`) {
		return nil, block
	}
	for ; i < len(block); i++ {
		l := strings.TrimSpace(block[i])
		if l == ")" {
			i++
			break
		}
		if l != "" {
			imports = append(imports, strings.Join(strings.Fields(l), " "))
		}
	}
	return imports, block[i:]
}

// importedNames gives the package names an import list brings in: the
// explicit name, or the last element of the path.
func importedNames(imports []string) []string {
	var names []string
	for _, imp := range imports {
		f := strings.Fields(imp)
		if len(f) == 2 {
			names = append(names, f[0])
			continue
		}
		p := strings.Trim(f[0], `"`)
		name := p[strings.LastIndex(p, "/")+1:]
		if strings.HasPrefix(name, "v") && len(name) <= 3 { // github.com/cenkalti/backoff/v4
			q := strings.TrimSuffix(p, "/"+name)
			name = q[strings.LastIndex(q, "/")+1:]
		}
		names = append(names, name)
	}
	return names
}

// ourPackages are the package names a reader must be shown the import of.
var ourPackages = []string{"aggregate", "repository", "memory", "serialized", "transport", "eventbus",
	"subscription", "boltcheckpoint", "bbolt", "bolt", "localserver", "snapshot", "gojson",
	"transporttest", "uuid", "zap", "backoff", "postgres"}

// usedPackages lists which of ourPackages a block's lines refer to as
// "name.".
func usedPackages(lines []string) []string {
	var used []string
	text := " " + strings.Join(lines, " ")
	for _, p := range ourPackages {
		for _, sep := range []string{" ", "(", "[", "*", "&", "!", "{", ","} {
			if strings.Contains(text, sep+p+".") {
				used = append(used, p)
				break
			}
		}
	}
	return used
}
