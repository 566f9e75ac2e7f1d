// Package gauges registers Prometheus gauge vectors that several
// subscriptions (or group members) share on one registry.
package gauges

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers a gauge vector on reg, or returns the one registered
// there before with the same options and labels.
func Register(reg prometheus.Registerer, opts prometheus.GaugeOpts, labels ...string) (*prometheus.GaugeVec, error) {
	v := prometheus.NewGaugeVec(opts, labels)
	err := reg.Register(v)
	if err == nil {
		return v, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(*prometheus.GaugeVec); ok {
			return old, nil
		}
	}
	return nil, fmt.Errorf("registering metric %s: %w", opts.Name, err)
}
