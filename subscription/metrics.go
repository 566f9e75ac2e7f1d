package subscription

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sourced-go/sourced/subscription/internal/gauges"
	"github.com/sourced-go/sourced/transport"
)

// Metrics exports the subscription's progress as Prometheus gauges on
// reg, labelled with the subscription's name (as given to New, without
// the partition suffix) and its partition number ("" when it reads the
// whole feed):
//
//	sourced_subscription_position  sequence number of the last entry handled
//	sourced_subscription_head      the feed's head at the last read
//	sourced_subscription_lag       sequence numbers behind the head (see Lag)
//
// Many subscriptions may share one registry. The gauges are set at every
// page read, and a subscription's series are removed when Run returns (a
// partition handed to another member stops being reported here). The
// label values are the names the program gives its subscriptions, never
// data from the feed.
func Metrics(reg prometheus.Registerer) Option { return func(s *Subscription) { s.registry = reg } }

// metrics are one subscription's gauges; a nil *metrics does nothing.
type metrics struct {
	vecs                [3]*prometheus.GaugeVec // position, head, lag
	labels              []string
	position, head, lag prometheus.Gauge
}

var metricOpts = [3]prometheus.GaugeOpts{
	{Name: "sourced_subscription_position", Help: "Sequence number of the last feed entry the subscription handled."},
	{Name: "sourced_subscription_head", Help: "The subscription's feed head at its last read."},
	{Name: "sourced_subscription_lag", Help: "Sequence numbers the subscription is behind its feed's head."},
}

// newMetrics registers (or finds, when another subscription registered
// them) the gauges on reg.
func newMetrics(reg prometheus.Registerer, name string, p transport.Partition) (*metrics, error) {
	m := &metrics{labels: []string{name, ""}}
	if p.Count > 1 {
		m.labels[1] = strconv.Itoa(p.Number)
	}
	for i, o := range metricOpts {
		v, err := gauges.Register(reg, o, "subscription", "partition")
		if err != nil {
			return nil, err
		}
		m.vecs[i] = v
	}
	return m, nil
}

func (m *metrics) started(pos int64) {
	if m != nil {
		// The series are made once Run has started (not in New): a
		// subscription that never runs, or fails at its start, leaves none
		// behind (forget removes them when Run returns).
		m.position = m.vecs[0].WithLabelValues(m.labels...)
		m.head = m.vecs[1].WithLabelValues(m.labels...)
		m.lag = m.vecs[2].WithLabelValues(m.labels...)
		m.position.Set(float64(pos))
	}
}

func (m *metrics) observe(pos, head, lag int64) {
	if m == nil {
		return
	}
	m.position.Set(float64(pos))
	m.head.Set(float64(head))
	m.lag.Set(float64(lag))
}

// forget removes the subscription's series.
func (m *metrics) forget() {
	if m == nil {
		return
	}
	for _, v := range m.vecs {
		v.DeleteLabelValues(m.labels...)
	}
}
