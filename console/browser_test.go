package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// findChromium returns the browser to drive, or skips (fails, when
// SOURCED_REQUIRE_BROWSER=1, as CI sets it) when there is none.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("SOURCED_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found: install Debian's chromium package (apt-get install chromium) or set SOURCED_CHROMIUM to run the browser tests"
	if os.Getenv("SOURCED_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifacts is where the screenshots go: SOURCED_ARTIFACTS_DIR, or a
// folder under the system's temporary directory that outlives the test.
func artifacts(t *testing.T) string {
	dir := os.Getenv("SOURCED_ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "sourced-console-screenshots")
	}
	dir = filepath.Join(dir, "console")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func TestConsoleInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	chromium := findChromium(t)
	shots := artifacts(t)

	tr := memory.New()
	c, err := console.New(tr, console.WithKeys(accessKey, secretKey), console.WithLiveWait(5*time.Second))
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	put := func(ref transport.Ref, typ, data string) {
		require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: typ, Data: json.RawMessage(data)}}, transport.Any))
	}
	order := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(order, "OrderPlaced", `{"customer":"Ada Lovelace","items":[{"sku":"PRN-42","quantity":1,"price":249.5}],"total":249.5}`)
	put(order, "OrderPaid", `{"amount":249.5,"method":"card"}`)
	put(order, "Script-Evil_1", hostile)
	for i := range 6 {
		put(transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", fmt.Sprintf(`{"customer":"Customer %d","total":%d}`, i, 10*(i+1)))
	}
	put(transport.Ref{Type: "payment", ID: uuid.NewString()}, "PaymentProcessed", `{"amount":249.5}`)

	// Chromium's helper processes may still write to its profile for a
	// moment after the browser is gone, which would fail t.TempDir's
	// cleanup: the profile gets a folder of its own, removed with retries.
	profile, err := os.MkdirTemp("", "sourced-chromium-")
	require.NoError(t, err)
	t.Cleanup(func() {
		policy := backoff.WithMaxRetries(backoff.NewConstantBackOff(100*time.Millisecond), 50)
		if err := backoff.Retry(func() error { return os.RemoveAll(profile) }, policy); err != nil {
			t.Logf("leaving Chromium's profile behind: %v", err)
		}
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(profile), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}

	// Nothing without signing in.
	var title string
	require.NoError(t, chromedp.Run(bctx,
		chromedp.Navigate(srv.URL+"/console/"),
		chromedp.WaitVisible(`#access_key`, chromedp.ByID),
		chromedp.Title(&title),
		shot("1-sign-in"),
	))
	assert.Contains(t, title, "Sign in")

	// Sign in; the types page lists both types with their counts.
	var types string
	require.NoError(t, chromedp.Run(bctx,
		chromedp.SendKeys(`#access_key`, accessKey, chromedp.ByID),
		chromedp.SendKeys(`#secret_key`, secretKey, chromedp.ByID),
		chromedp.Submit(`#secret_key`, chromedp.ByID),
		chromedp.WaitVisible(`#types`, chromedp.ByID),
		chromedp.Text(`#types`, &types, chromedp.ByID),
		shot("2-types"),
	))
	assert.Contains(t, types, "order")
	assert.Contains(t, types, "payment")

	// The aggregates of a type.
	var list string
	require.NoError(t, chromedp.Run(bctx,
		chromedp.Click(`a[href="/console/types/order"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#aggregates`, chromedp.ByID),
		chromedp.Text(`#aggregates`, &list, chromedp.ByID),
		shot("3-aggregates"),
	))
	assert.Contains(t, list, order.ID)

	// One aggregate's history: hostile data shows as text, and runs nothing.
	var history string
	var pwned bool
	require.NoError(t, chromedp.Run(bctx,
		chromedp.Click(fmt.Sprintf(`a[href="/console/aggregates/order/%s"]`, order.ID), chromedp.ByQuery),
		chromedp.WaitVisible(`#history`, chromedp.ByID),
		chromedp.Text(`#history`, &history, chromedp.ByID),
		chromedp.Evaluate(`window.pwned !== undefined || document.querySelector('#history b, #history img, #history script') !== null`, &pwned),
		shot("4-history"),
	))
	assert.Contains(t, history, "version 3")
	assert.Contains(t, history, "<script>window.pwned=1</script>")
	assert.Contains(t, history, `<img src=x onerror=\"window.pwned=2\">`)
	assert.False(t, pwned, "event data ran as HTML")

	// The live feed shows what is stored while it is open.
	var count int
	require.NoError(t, chromedp.Run(bctx,
		chromedp.Navigate(srv.URL+"/console/feed"),
		chromedp.WaitVisible(`#status.live-on`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('#live li').length`, &count),
	))
	assert.Equal(t, 10, count)
	fresh := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(fresh, "OrderPlaced", `{"customer":"Grace Hopper","total":99}`)
	put(fresh, "Script-Evil_1", `{"name":"<script>window.pwned=3</script>"}`)
	put(order, "OrderShipped", `{"carrier":"DHL"}`)
	var top string
	require.NoError(t, chromedp.Run(bctx,
		chromedp.WaitVisible(`#live li[data-sequence="13"]`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('#live li').length`, &count),
		chromedp.Text(`#live li:first-child`, &top, chromedp.ByQuery),
		chromedp.Evaluate(`window.pwned !== undefined || document.querySelector('#live b, #live img, #live script') !== null`, &pwned),
		chromedp.Sleep(1600*time.Millisecond), // let the highlight fade before the picture
		shot("5-live-feed"),
	))
	assert.Equal(t, 13, count)
	assert.Contains(t, top, "OrderShipped")
	assert.False(t, pwned, "event data ran as HTML in the live feed")
	t.Logf("screenshots in %s", shots)
}
