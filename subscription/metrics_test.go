package subscription_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// series returns the gauges of a gathered registry, by name and label
// values ("name{partition=1,subscription=list}").
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil { // (called from other goroutines too: no FailNow)
		t.Errorf("gather: %v", err)
		return nil
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	orders(t, tr, "", 9)
	reg := prometheus.NewRegistry()
	cps := subscription.NewMemoryCheckpoints()
	// A partition's position is its own last entry.
	last := map[int]int64{}
	page, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.NoError(t, err)
	for _, e := range page.Entries {
		last[transport.PartitionOf(e.AggregateID, 2)] = e.Sequence
	}

	whole, err := subscription.New(tr, "all", cps, subscription.Metrics(reg), subscription.Wait(10*time.Millisecond))
	require.NoError(t, err)
	whole.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
	// Another subscription, and the partitions of a third, on the same
	// registry.
	var subs []*subscription.Subscription
	for p := range 2 {
		sub, err := subscription.New(tr, "list", cps, subscription.Partition(2, p), subscription.Metrics(reg), subscription.Wait(10*time.Millisecond))
		require.NoError(t, err)
		sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
		subs = append(subs, sub)
	}
	done := start(t, whole)
	var dones []chan error
	for _, sub := range subs {
		dones = append(dones, start(t, sub))
	}
	require.NoError(t, whole.Await(ctx, 9))
	for _, sub := range subs {
		require.NoError(t, sub.Await(ctx, 9))
	}
	// The gauges are set after the page that reached the head.
	require.Eventually(t, func() bool {
		got := series(t, reg)
		return got["sourced_subscription_lag{partition=,subscription=all}"] == 0 && got["sourced_subscription_position{partition=,subscription=all}"] == 9 &&
			got["sourced_subscription_lag{partition=0,subscription=list}"] == 0 && got["sourced_subscription_lag{partition=1,subscription=list}"] == 0 &&
			got["sourced_subscription_head{partition=1,subscription=list}"] == 9
	}, 10*time.Second, time.Millisecond)
	got := series(t, reg)
	assert.Equal(t, map[string]float64{
		"sourced_subscription_position{partition=,subscription=all}":   9,
		"sourced_subscription_head{partition=,subscription=all}":       9,
		"sourced_subscription_lag{partition=,subscription=all}":        0,
		"sourced_subscription_position{partition=0,subscription=list}": float64(last[0]),
		"sourced_subscription_head{partition=0,subscription=list}":     9,
		"sourced_subscription_lag{partition=0,subscription=list}":      0,
		"sourced_subscription_position{partition=1,subscription=list}": float64(last[1]),
		"sourced_subscription_head{partition=1,subscription=list}":     9,
		"sourced_subscription_lag{partition=1,subscription=list}":      0,
	}, got)
	n, err := testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Equal(t, 9, n, "3 gauges for each of 3 subscriptions")

	// A stopped subscription's series go.
	require.NoError(t, subs[1].Close(ctx))
	require.NoError(t, <-dones[1])
	got = series(t, reg)
	assert.NotContains(t, got, "sourced_subscription_lag{partition=1,subscription=list}")
	assert.Contains(t, got, "sourced_subscription_lag{partition=0,subscription=list}")
	require.NoError(t, whole.Close(ctx))
	require.NoError(t, <-done)
	assert.NotContains(t, series(t, reg), "sourced_subscription_lag{partition=,subscription=all}")
}

func TestMetricsLagWhileBehind(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	orders(t, tr, "", 3)
	reg := prometheus.NewRegistry()
	sub, err := subscription.New(tr, "list", subscription.NewMemoryCheckpoints(), subscription.Metrics(reg), subscription.PageSize(1),
		subscription.Wait(10*time.Millisecond))
	require.NoError(t, err)
	lags := make(chan float64, 10)
	sub.OnEntry(func(_ context.Context, e transport.FeedEntry) error {
		if e.Sequence > 1 { // the page before this one has been observed
			lags <- series(t, reg)["sourced_subscription_lag{partition=,subscription=list}"]
		}
		return nil
	})
	start(t, sub)
	require.NoError(t, sub.Await(ctx, 3))
	assert.Equal(t, 2.0, <-lags, "after entry 1 of 3")
	assert.Equal(t, 1.0, <-lags, "after entry 2 of 3")
}

func TestMetricsRegistryConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_subscription_lag", Help: "something else"}))
	_, err := subscription.New(memory.New(), "list", subscription.NewMemoryCheckpoints(), subscription.Metrics(reg))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sourced_subscription_lag")
}

func TestLagEveryLogs(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	orders(t, tr, "", 3)
	core, logs := observer.New(zapcore.InfoLevel)
	sub, err := subscription.New(tr, "list", subscription.NewMemoryCheckpoints(), subscription.WithLogger(zap.New(core)),
		subscription.LagEvery(time.Nanosecond), subscription.PageSize(1), subscription.Wait(10*time.Millisecond))
	require.NoError(t, err)
	sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
	start(t, sub)
	require.NoError(t, sub.Await(ctx, 3))
	require.Eventually(t, func() bool { return logs.FilterMessage("subscription lag").Len() >= 3 }, 10*time.Second, time.Millisecond)
	var got []int64
	for _, e := range logs.FilterMessage("subscription lag").All()[:3] {
		m := e.ContextMap()
		assert.Equal(t, "list", m["subscription"])
		got = append(got, m["lag"].(int64))
	}
	assert.Equal(t, []int64{2, 1, 0}, got)
}
