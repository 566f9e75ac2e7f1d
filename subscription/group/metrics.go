package group

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/subscription/internal/gauges"
)

// Metrics exports the member's share of the group as Prometheus gauges on
// reg, updated at every Sync, labelled with the group's name and the
// partition number (closed sets: the names the program gives):
//
//	sourced_group_partitions       partitions whose subscriptions run in this member
//	sourced_group_partition_lag    sequence numbers each of them is behind its feed's head
//
// A partition's series is removed when it stops here (handed to another
// member). Every process exports its own partitions: summed over the
// scraped processes, each partition is reported once. Give the
// subscriptions subscription.Metrics too for their position and head.
// A registry that refuses the gauges (another metric of the same name)
// makes NewMember fail.
func Metrics(reg prometheus.Registerer) RunOption { return func(r *runner) { r.registry = reg } }

type groupMetrics struct {
	held *prometheus.GaugeVec
	lag  *prometheus.GaugeVec
	seen map[int]bool // partitions with a lag series
}

func newGroupMetrics(reg prometheus.Registerer) (*groupMetrics, error) {
	held, err := gauges.Register(reg, prometheus.GaugeOpts{Name: "sourced_group_partitions",
		Help: "Partitions of the consumer group whose subscriptions run in this member."}, "group")
	if err != nil {
		return nil, err
	}
	lag, err := gauges.Register(reg, prometheus.GaugeOpts{Name: "sourced_group_partition_lag",
		Help: "Sequence numbers a partition of the consumer group run in this member is behind its feed's head."}, "group", "partition")
	if err != nil {
		return nil, err
	}
	return &groupMetrics{held: held, lag: lag, seen: map[int]bool{}}, nil
}

// observe sets the gauges from what runs now (called from Run's goroutine
// after each Sync); ended removes every series.
func (r *runner) observe(ctx context.Context, ended bool) {
	g := r.metrics
	if g == nil {
		return
	}
	lags := map[int]int64{}
	if !ended {
		var err error
		if lags, err = (&Member{r: r}).Lag(ctx); err != nil {
			r.log.Debug("group lag not measured", zap.String("group", r.group), zap.Error(err))
			return
		}
	}
	for p := range g.seen {
		if _, ok := lags[p]; !ok {
			g.lag.DeleteLabelValues(r.group, strconv.Itoa(p))
			delete(g.seen, p)
		}
	}
	for p, l := range lags {
		g.lag.WithLabelValues(r.group, strconv.Itoa(p)).Set(float64(l))
		g.seen[p] = true
	}
	if ended {
		g.held.DeleteLabelValues(r.group)
		return
	}
	g.held.WithLabelValues(r.group).Set(float64(len(lags)))
}
