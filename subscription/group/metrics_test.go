package group_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// gauges returns the gauges of reg as "name{label=value,...}".
func gauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
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

func TestMetricsPerMember(t *testing.T) {
	tr := memory.New()
	storeSome(t, tr, 0, 40)
	coord := group.NewMemory(newClock().Now)
	cps := subscription.NewMemoryCheckpoints()
	type run struct {
		reg    *prometheus.Registry
		ticks  chan time.Time
		cancel context.CancelFunc
		done   chan error
	}
	start := func(name string) *run {
		ctx, cancel := context.WithCancel(context.Background())
		r := &run{reg: prometheus.NewRegistry(), ticks: make(chan time.Time), cancel: cancel, done: make(chan error, 1)}
		m, err := group.NewMember(coord, "list", name, 4, func(p transport.Partition, _ group.Fence) (*subscription.Subscription, error) {
			sub, err := subscription.New(tr, "list", cps, subscription.Partition(p.Count, p.Number), subscription.Wait(10*time.Millisecond),
				subscription.Metrics(r.reg))
			if err != nil {
				return nil, err
			}
			sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
			return sub, nil
		}, group.Ticks(r.ticks), group.Metrics(r.reg))
		require.NoError(t, err)
		go func() { r.done <- m.Run(ctx) }()
		return r
	}
	// settled syncs r until its gauges say it holds want, caught up.
	settled := func(r *run, want ...int) {
		t.Helper()
		require.Eventually(t, func() bool {
			select {
			case r.ticks <- time.Now():
			default:
			}
			got := gauges(t, r.reg)
			if got["sourced_group_partitions{group=list}"] != float64(len(want)) {
				return false
			}
			n := 0
			for k, v := range got {
				if strings.HasPrefix(k, "sourced_group_partition_lag{") {
					n++
					if v != 0 {
						return false
					}
				}
			}
			if n != len(want) {
				return false
			}
			for _, p := range want {
				if _, ok := got["sourced_group_partition_lag{group=list,partition="+string(rune('0'+p))+"}"]; !ok {
					return false
				}
			}
			return true
		}, 20*time.Second, time.Millisecond)
	}
	a := start("a")
	settled(a, 0, 1, 2, 3)
	got := gauges(t, a.reg)
	assert.Equal(t, 40.0, got["sourced_subscription_head{partition=2,subscription=list}"], "with the subscriptions' own gauges")

	b := start("b")
	settled(b, 2, 3)
	settled(a, 0, 1)
	assert.NotContains(t, gauges(t, a.reg), "sourced_subscription_head{partition=2,subscription=list}", "handed over: no longer reported here")

	a.cancel()
	require.NoError(t, <-a.done)
	assert.Empty(t, gauges(t, a.reg), "a member that left reports nothing")
	settled(b, 0, 1, 2, 3)
	b.cancel()
	require.NoError(t, <-b.done)
}

func TestMetricsRegistryConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_group_partitions", Help: "other"}))
	_, err := group.NewMember(group.NewMemory(nil), "list", "a", 2, func(transport.Partition, group.Fence) (*subscription.Subscription, error) {
		return nil, nil
	}, group.Metrics(reg))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sourced_group_partitions")
}
