// Package metrics owns berthd's Prometheus metrics: CRI request counts and
// latencies by method and gRPC code, pod sandbox and container counts by
// state, image pull sizes and durations, the number of shims, and the Go
// runtime and process collectors. It only observes: the interceptor, the
// image service wrapper and the store feed it through narrow hooks.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

const namespace = "berth"

// Options wires the gauges that are read at scrape time. A nil func leaves
// its metric out.
type Options struct {
	// States returns pod sandbox and container counts keyed by state
	// ("READY", "RUNNING", ...). Include zero counts so a series does not
	// vanish when its last object goes.
	States func() (sandboxes, containers map[string]int)
	// Shims returns how many shims berthd knows to be alive.
	Shims func() int
	// Collectors are other components' metrics (NRI's) to serve too.
	Collectors []prometheus.Collector
}

// PullObserver is what an image puller reports to after each pull; bytes
// is what the pull accounts for (compressed layers and config).
type PullObserver interface {
	ObservePull(bytes int64, d time.Duration, err error)
}

// Metrics holds berthd's collectors in their own registry, so tests can run
// several side by side and nothing registers globally.
type Metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	pulls        *prometheus.CounterVec
	pullBytes    prometheus.Counter
	pullDuration *prometheus.HistogramVec
}

var _ PullObserver = (*Metrics)(nil)

// New builds the collectors and registers them with the Go runtime and
// process collectors.
func New(o Options) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cri", Name: "requests_total",
			Help: "CRI requests served, by method and gRPC status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "cri", Name: "request_duration_seconds",
			Help: "CRI request latency, by method and gRPC status code.",
			// From a cached status read to a pull of a large image.
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 240},
		}, []string{"method", "code"}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "image", Name: "pulls_total",
			Help: "Image pulls, by result (success or failure).",
		}, []string{"result"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "image", Name: "pull_bytes_total",
			Help: "Compressed size (layers and config) of the images pulled successfully.",
		}),
		pullDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "image", Name: "pull_duration_seconds",
			Help:    "Image pull duration, by result.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.pulls, m.pullBytes, m.pullDuration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: namespace}),
	)
	m.reg.MustRegister(o.Collectors...)
	if o.States != nil {
		m.reg.MustRegister(&stateCollector{states: o.States})
	}
	if o.Shims != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "shims",
			Help: "berth-shim processes berthd knows to be alive.",
		}, func() float64 { return float64(o.Shims()) }))
	}
	return m
}

// ObserveRequest records one CRI request; its signature matches
// interceptor.Observer. method is the short RPC name ("RunPodSandbox").
func (m *Metrics) ObserveRequest(method string, code codes.Code, d time.Duration) {
	c := code.String()
	m.requests.WithLabelValues(method, c).Inc()
	m.latency.WithLabelValues(method, c).Observe(d.Seconds())
}

// ObservePull records one image pull.
func (m *Metrics) ObservePull(bytes int64, d time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	} else if bytes > 0 {
		m.pullBytes.Add(float64(bytes))
	}
	m.pulls.WithLabelValues(result).Inc()
	m.pullDuration.WithLabelValues(result).Observe(d.Seconds())
}

// Gatherer exposes the registry, for tests and for embedding elsewhere.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// stateCollector reads the counts at scrape time, so they can never drift
// from the store the way incremented gauges could.
type stateCollector struct {
	states func() (sandboxes, containers map[string]int)
}

var (
	sandboxesDesc  = prometheus.NewDesc(namespace+"_pod_sandboxes", "Pod sandboxes, by state.", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc(namespace+"_containers", "Containers, by state.", []string{"state"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sandboxesDesc
	ch <- containersDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	sandboxes, containers := c.states()
	for state, n := range sandboxes {
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), state)
	}
	for state, n := range containers {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), state)
	}
}

// Server is a running /metrics endpoint.
type Server struct {
	srv  *http.Server
	lis  net.Listener
	done chan struct{}
}

// Serve listens on addr (host:port; port 0 picks one) and serves /metrics
// until Shutdown.
func (m *Metrics) Serve(addr string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler(log))
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		lis:  lis,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "error", err)
		}
	}()
	return s, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Shutdown stops accepting scrapes and waits for those in flight, up to
// ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}
