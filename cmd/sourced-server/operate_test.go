package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
)

// start runs the server with args and env until the test ends, and
// returns its address and logs.
func start(t *testing.T, args []string, vars map[string]string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env(vars), logs, ready) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case addr := <-ready:
		return addr, logs
	case err := <-done:
		t.Fatalf("server did not start: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready")
	}
	return "", nil
}

func TestRefusesTheNetworkWithoutKeys(t *testing.T) {
	err := run(context.Background(), []string{"-addr", "0.0.0.0:0"}, env(nil), &syncBuffer{}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-insecure-no-keys")
	err = run(context.Background(), []string{"-addr", ":0"}, env(nil), &syncBuffer{}, nil)
	assert.ErrorContains(t, err, "-insecure-no-keys", "an empty host listens everywhere")

	addr, logs := start(t, []string{"-addr", "0.0.0.0:0", "-insecure-no-keys"}, nil)
	assert.NotEmpty(t, addr)
	assert.Contains(t, logs.String(), "accepting every request")

	start(t, []string{"-addr", "0.0.0.0:0"}, map[string]string{"SERIALIZED_ACCESS_KEY": "a", "SERIALIZED_SECRET_ACCESS_KEY": "b"})
	start(t, []string{"-addr", "localhost:0"}, nil)
}

func TestKeysFromFiles(t *testing.T) {
	dir := t.TempDir()
	access, secret := filepath.Join(dir, "access"), filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(access, []byte("file-access-key\n"), 0o600))
	require.NoError(t, os.WriteFile(secret, []byte("file-secret-value-42\n"), 0o600))
	addr, logs := start(t, []string{"-addr", "127.0.0.1:0"}, map[string]string{
		"SERIALIZED_ACCESS_KEY_FILE": access, "SERIALIZED_SECRET_ACCESS_KEY_FILE": secret})
	req, _ := http.NewRequest("HEAD", "http://"+addr+"/aggregates/order/"+uuid.NewString(), nil)
	req.Header.Set("Serialized-Access-Key", "file-access-key")
	req.Header.Set("Serialized-Secret-Access-Key", "file-secret-value-42")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 404, res.StatusCode, "the keys from the files (without their newline) are the keys")
	assert.NotContains(t, logs.String(), "file-secret-value-42")

	err = run(context.Background(), []string{"-addr", "127.0.0.1:0"}, env(map[string]string{
		"SERIALIZED_ACCESS_KEY": "x", "SERIALIZED_ACCESS_KEY_FILE": access, "SERIALIZED_SECRET_ACCESS_KEY": "y"}), &syncBuffer{}, nil)
	assert.ErrorContains(t, err, "not both")
	err = run(context.Background(), []string{"-addr", "127.0.0.1:0"}, env(map[string]string{
		"SERIALIZED_ACCESS_KEY_FILE": filepath.Join(dir, "missing"), "SERIALIZED_SECRET_ACCESS_KEY": "y"}), &syncBuffer{}, nil)
	assert.Error(t, err)
}

func TestHelpShowsNoSecret(t *testing.T) {
	out := &syncBuffer{}
	err := run(context.Background(), []string{"-h"}, env(map[string]string{
		"SERIALIZED_ACCESS_KEY": "help-access-1", "SERIALIZED_SECRET_ACCESS_KEY": "help-secret-2",
		"SOURCED_POSTGRES_URL": "postgres://u:help-pg-password-3@db/x"}), out, nil)
	require.NoError(t, err, "-h is not an error")
	assert.Contains(t, out.String(), "-insecure-no-keys")
	for _, s := range []string{"help-access-1", "help-secret-2", "help-pg-password-3"} {
		assert.NotContains(t, out.String(), s)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sourced test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	addr, logs := start(t, []string{"-addr", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile},
		map[string]string{"SERIALIZED_ACCESS_KEY": "tls-a", "SERIALIZED_SECRET_ACCESS_KEY": "tls-s"})
	assert.Contains(t, logs.String(), "https://"+addr)

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	client, err := serialized.New(serialized.WithBaseURL("https://"+addr), serialized.WithKeys("tls-a", "tls-s"), serialized.WithHTTPClient(hc))
	require.NoError(t, err)
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, client.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"n":1}`)}}, transport.MustNotExist))
	p, err := client.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Len(t, p.Events, 1)

	// Old protocol versions are refused.
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}}
	_, err = old.Get("https://" + addr + "/healthz")
	assert.Error(t, err)
	// Plain HTTP to the TLS port gets no API answer.
	res, err := http.Get("http://" + addr + "/healthz")
	if err == nil {
		res.Body.Close()
		assert.Equal(t, http.StatusBadRequest, res.StatusCode)
	}

	err = run(ctx, []string{"-addr", "127.0.0.1:0", "-tls-cert", certFile}, env(nil), &syncBuffer{}, nil)
	assert.ErrorContains(t, err, "both -tls-cert and -tls-key")
	err = run(ctx, []string{"-addr", "127.0.0.1:0", "-tls-cert", keyFile, "-tls-key", keyFile}, env(nil), &syncBuffer{}, nil)
	assert.ErrorContains(t, err, "TLS certificate and key")
}

func TestHealthAndReadiness(t *testing.T) {
	addr, _ := start(t, []string{"-addr", "127.0.0.1:0"}, map[string]string{"SERIALIZED_ACCESS_KEY": "h-a", "SERIALIZED_SECRET_ACCESS_KEY": "h-s"})
	for _, p := range []string{"/healthz", "/readyz"} {
		res, err := http.Get("http://" + addr + p)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, 200, res.StatusCode, p)
		assert.Less(t, len(body), 10, "%s says nothing about the data", p)
	}
	// A store that does not answer is not ready.
	down := faultinject.Wrap(memory.New(), func(faultinject.Op) faultinject.Fault { return faultinject.Fail(errors.New("down")) })
	life, monitor := newLifecycle(), &atomic.Pointer[storeMonitor]{}
	life.serve(http.NotFoundHandler())
	monitor.Store(newStoreMonitor(down, zap.NewNop(), newOpsMetrics(prometheus.NewRegistry(), build{})))
	rec := &recorder{ResponseWriter: discard{}}
	readyz(life, probe(monitor))(rec, mustRequest(t, "/readyz"))
	assert.Equal(t, http.StatusServiceUnavailable, rec.status)
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

func mustRequest(t *testing.T, path string) *http.Request {
	req, err := http.NewRequest("GET", path, nil)
	require.NoError(t, err)
	return req
}

func TestConsoleFlag(t *testing.T) {
	get := func(addr string) int {
		res, err := http.Get("http://" + addr + "/console/login")
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	keys := map[string]string{"SERIALIZED_ACCESS_KEY": "c-a", "SERIALIZED_SECRET_ACCESS_KEY": "c-s"}
	addr, _ := start(t, []string{"-addr", "127.0.0.1:0"}, keys)
	assert.Equal(t, 200, get(addr), "on by default on loopback")
	addr, _ = start(t, []string{"-addr", "127.0.0.1:0", "-console", "off"}, keys)
	assert.NotEqual(t, 200, get(addr))
	addr, _ = start(t, []string{"-addr", "0.0.0.0:0"}, keys)
	assert.NotEqual(t, 200, get(addr), "off by default beyond loopback")
	addr, _ = start(t, []string{"-addr", "0.0.0.0:0", "-console", "on"}, keys)
	assert.Equal(t, 200, get(addr))
	assert.Error(t, run(context.Background(), []string{"-console", "maybe"}, env(nil), &syncBuffer{}, nil))
}

// TestMetricsAddUp runs clients that race on shared aggregates and checks
// that the server's counters equal what the clients saw.
func TestMetricsAddUp(t *testing.T) {
	keys := map[string]string{"SERIALIZED_ACCESS_KEY": "m-a", "SERIALIZED_SECRET_ACCESS_KEY": "m-s"}
	addr, logs := start(t, []string{"-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0"}, keys)
	res, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	res.Body.Close()
	assert.NotEqual(t, 200, res.StatusCode, "with -metrics-addr, /metrics leaves the main address")
	m := regexp.MustCompile(`"msg":"metrics","addr":"([^"]+)"`).FindStringSubmatch(logs.String())
	require.NotNil(t, m, logs.String())
	res, err = http.Get("http://" + m[1] + "/metrics")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode, "it is on the metrics address")

	addr2, _ := start(t, []string{"-addr", "127.0.0.1:0"}, keys)
	figures := loadRun(t, addr2, 16, 30)
	res, err = http.Get("http://" + addr2 + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	text := string(body)
	assert.Equal(t, figures.stores, metric(t, text, `sourced_stores_total`), "stores")
	assert.Equal(t, figures.conflicts, metric(t, text, `sourced_conflicts_total`), "conflicts")
	assert.Equal(t, figures.requests, sumMetric(text, `sourced_http_requests_total{`), "requests")
	assert.Zero(t, metric(t, text, `sourced_store_errors_total`))
	assert.NotContains(t, text, "m-s")
	t.Logf("load run: %d requests, %d stores, %d conflicts; the metrics agree", figures.requests, figures.stores, figures.conflicts)
}

type loadFigures struct{ requests, stores, conflicts int64 }

// loadRun: clients each load and store on a few shared aggregates, racing;
// it counts requests, acknowledged stores and 409s as the clients see them.
func loadRun(t *testing.T, addr string, clients, rounds int) loadFigures {
	t.Helper()
	var mu sync.Mutex
	var f loadFigures
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{}
			do := func(method, path, body string) int {
				req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
				req.Header.Set("Serialized-Access-Key", "m-a")
				req.Header.Set("Serialized-Secret-Access-Key", "m-s")
				res, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					return 0
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				mu.Lock()
				f.requests++
				switch {
				case res.StatusCode == 409:
					f.conflicts++
				case res.StatusCode == 200 && method == "POST":
					f.stores++
				}
				mu.Unlock()
				return res.StatusCode
			}
			for r := range rounds {
				id := ids[(c+r)%len(ids)]
				status := do("GET", "/aggregates/order/"+id, "")
				version := 0
				if status == 200 {
					// the exact version does not matter: racing is the point
					version = r % 3
				}
				do("POST", "/aggregates/order/"+id+"/events", fmt.Sprintf(`{"events":[{"eventType":"Tick"}],"expectedVersion":%d}`, version))
			}
		}()
	}
	wg.Wait()
	return f
}

func metric(t *testing.T, text, name string) int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+]+)$`).FindStringSubmatch(text)
	require.NotNil(t, m, "metric %s missing", name)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return int64(v)
}

func sumMetric(text, prefix string) int64 {
	var total float64
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return int64(total)
}
