package nri

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics implements the adaptation's Metrics as Prometheus collectors:
// which plugins answer which events, how fast, with what errors, and what
// they adjust. It also remembers which plugin returned which recent error,
// so a failed CRI call can name the plugin.
type Metrics struct {
	plugins     prometheus.Gauge
	invocations *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	adjustments *prometheus.CounterVec
	count       atomic.Int64

	mu       sync.Mutex
	failures []failure // ring of the last few plugin errors, newest last
}

type failure struct {
	msg, plugin string
}

const maxFailures = 16

var _ adaptation.Metrics = (*Metrics)(nil)

// NewMetrics returns unregistered collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		plugins: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_nri_plugins", Help: "NRI plugins connected and synchronised.",
		}),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_nri_plugin_invocations_total", Help: "NRI events sent to plugins, by plugin, event and result.",
		}, []string{"plugin", "event", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "berth_nri_plugin_latency_seconds", Help: "Time NRI plugins took to answer an event.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 2, 5},
		}, []string{"plugin", "event"}),
		adjustments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_nri_plugin_adjustments_total", Help: "Changes NRI plugins asked for, by plugin, event and kind (adjust, update, evict).",
		}, []string{"plugin", "event", "kind"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.plugins, m.invocations, m.latency, m.adjustments}
}

// RecordPluginInvocation implements adaptation.Metrics.
func (m *Metrics) RecordPluginInvocation(plugin, op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
		m.mu.Lock()
		m.failures = append(m.failures, failure{msg: err.Error(), plugin: plugin})
		if len(m.failures) > maxFailures {
			m.failures = m.failures[1:]
		}
		m.mu.Unlock()
	}
	m.invocations.WithLabelValues(plugin, op, result).Inc()
}

// RecordPluginLatency implements adaptation.Metrics.
func (m *Metrics) RecordPluginLatency(plugin, op string, d time.Duration) {
	m.latency.WithLabelValues(plugin, op).Observe(d.Seconds())
}

// RecordPluginAdjustments implements adaptation.Metrics.
func (m *Metrics) RecordPluginAdjustments(plugin, op string, adj *adaptation.ContainerAdjustment, updates, evicts int) {
	if adj != nil && len(describe(adj)) > 0 {
		m.adjustments.WithLabelValues(plugin, op, "adjust").Inc()
	}
	if updates > 0 {
		m.adjustments.WithLabelValues(plugin, op, "update").Add(float64(updates))
	}
	if evicts > 0 {
		m.adjustments.WithLabelValues(plugin, op, "evict").Add(float64(evicts))
	}
}

// UpdatePluginCount implements adaptation.Metrics.
func (m *Metrics) UpdatePluginCount(n int) {
	m.count.Store(int64(n))
	m.plugins.Set(float64(n))
}

// Plugins is the number of plugins connected and synchronised.
func (m *Metrics) Plugins() int { return int(m.count.Load()) }

// failedPlugin names the plugin that most recently returned err, or "".
// Errors cross ttrpc, so they are matched by message.
func (m *Metrics) failedPlugin(err error) string {
	msg := err.Error()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.failures) - 1; i >= 0; i-- {
		if m.failures[i].msg == msg {
			return m.failures[i].plugin
		}
	}
	return ""
}
