package docs_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
// line for line, in snippets_test.go, which the compiler checks.
func TestDocBlocksCompile(t *testing.T) {
	src, err := os.ReadFile("snippets_test.go")
	require.NoError(t, err)
	compiled := normalize(strings.Split(string(src), "\n"))
	docs, err := filepath.Glob("*.md")
	require.NoError(t, err)
	docs = append(docs, filepath.Join("..", "README.md"))
	checked := 0
	for _, d := range docs {
		for i, b := range goBlocks(t, d) {
			n := normalize(b)
			if len(n) == 0 {
				continue
			}
			checked++
			assert.True(t, contains(compiled, n), "%s: Go block %d is not in snippets_test.go:\n%s", d, i+1, strings.Join(b, "\n"))
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
}
