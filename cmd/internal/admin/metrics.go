package admin

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/kmip"
)

// Metrics holds the server's Prometheus metrics. Its methods feed them from the hooks
// of kmip, hsm and meta, and are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	conns      prometheus.Gauge
	handshakes *prometheus.CounterVec
	limits     *prometheus.CounterVec
	commits    prometheus.Histogram
	batchSize  prometheus.Histogram

	once   sync.Mutex // guards the one-time registrations below
	token  bool
	backup bool
	mirror bool
}

var _ kmip.Observer = (*Metrics)(nil)

// NewMetrics registers every metric on a fresh registry, with the Go runtime and
// process collectors (process_resident_memory_bytes, open file descriptors).
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmkms_kmip_requests_total",
			Help: "KMIP batch items served, by operation and result (Success or the result reason).",
		}, []string{"operation", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hsmkms_kmip_request_duration_seconds",
			Help:    "Time a KMIP batch item spent in its handler, by operation.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2.5, 12), // 50 µs to ~1.2 s
		}, []string{"operation"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hsmkms_kmip_connections_open",
			Help: "KMIP connections currently open, handshaking included.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmkms_tls_handshake_failures_total",
			Help: "Failed TLS handshakes by cause: no_cert, bad_cert, revoked, timeout, protocol.",
		}, []string{"cause"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmkms_limit_hits_total",
			Help: "Times a server limit was hit, by limit (the config key).",
		}, []string{"limit"}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hsmkms_store_commit_duration_seconds",
			Help:    "Time of one SQLite group commit, BEGIN to durable COMMIT.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 14), // 100 µs to ~0.8 s
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hsmkms_store_commit_batch_size",
			Help:    "Updates made durable by one SQLite group commit.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
	}
	// Every cause and limit is present from the start, at 0, so a rate() over a fresh
	// server has data and a dashboard shows what can happen.
	for _, c := range []kmip.HandshakeCause{kmip.CauseNoCert, kmip.CauseBadCert, kmip.CauseRevoked, kmip.CauseTimeout, kmip.CauseProtocol} {
		m.handshakes.WithLabelValues(string(c))
	}
	for _, l := range []kmip.Limit{kmip.LimitConnections, kmip.LimitClientRequests, kmip.LimitMessageSize, kmip.LimitReadTimeout, kmip.LimitIdleTimeout} {
		m.limits.WithLabelValues(string(l))
	}
	m.reg.MustRegister(m.requests, m.latency, m.conns, m.handshakes, m.limits, m.commits, m.batchSize,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// OnConnOpen counts an open connection (kmip.Observer).
func (m *Metrics) OnConnOpen() { m.conns.Inc() }

// OnConnClose uncounts it (kmip.Observer).
func (m *Metrics) OnConnClose() { m.conns.Dec() }

// OnHandshakeError counts a failed handshake (kmip.Observer).
func (m *Metrics) OnHandshakeError(cause kmip.HandshakeCause) {
	m.handshakes.WithLabelValues(string(cause)).Inc()
}

// OnLimit counts a limit hit (kmip.Observer).
func (m *Metrics) OnLimit(limit kmip.Limit) { m.limits.WithLabelValues(string(limit)).Inc() }

// ObserveItem records one served batch item; pass it to kmip.Measure.
func (m *Metrics) ObserveItem(op, result string, d time.Duration) {
	m.requests.WithLabelValues(op, result).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
}

// ObserveCommit records one group commit; pass it as meta.Options.OnCommit.
func (m *Metrics) ObserveCommit(d time.Duration, n int) {
	m.commits.Observe(d.Seconds())
	m.batchSize.Observe(float64(n))
}

// WatchToken exports the token's session pool and PKCS#11 error counts, read from
// stats at every scrape. Call it once per Metrics.
func (m *Metrics) WatchToken(stats func() hsm.Stats) {
	m.once.Lock()
	defer m.once.Unlock()
	if m.token {
		panic("admin: WatchToken called twice")
	}
	m.token = true
	m.reg.MustRegister(&tokenCollector{stats: stats})
}

// SetLastBackup exports hsmkms_backup_age_seconds, the time since last() says the
// newest backup was taken; while ok is false (no backup yet) the metric is absent, so
// an alert on it can tell "never" from "long ago". Call it once per Metrics.
func (m *Metrics) SetLastBackup(last func() (t time.Time, ok bool)) {
	m.once.Lock()
	defer m.once.Unlock()
	if m.backup {
		panic("admin: SetLastBackup called twice")
	}
	m.backup = true
	m.reg.MustRegister(&backupCollector{last: last})
}

var (
	descSessions = prometheus.NewDesc("hsmkms_hsm_sessions",
		"Size of the PKCS#11 session pool.", nil, nil)
	descSessionsInUse = prometheus.NewDesc("hsmkms_hsm_sessions_in_use",
		"PKCS#11 sessions held by running operations.", nil, nil)
	descP11Errors = prometheus.NewDesc("hsmkms_hsm_errors_total",
		"Token operations that failed with a PKCS#11 return value, by its CKR name.", []string{"ckr"}, nil)
	descBackupAge = prometheus.NewDesc("hsmkms_backup_age_seconds",
		"Seconds since the newest backup was taken.", nil, nil)
)

// tokenCollector reads hsm.Stats at scrape time.
type tokenCollector struct{ stats func() hsm.Stats }

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSessions
	ch <- descSessionsInUse
	ch <- descP11Errors
}

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(s.Sessions))
	ch <- prometheus.MustNewConstMetric(descSessionsInUse, prometheus.GaugeValue, float64(s.SessionsInUse))
	for ckr, n := range s.Errors {
		ch <- prometheus.MustNewConstMetric(descP11Errors, prometheus.CounterValue, float64(n), ckr)
	}
}

// backupCollector reads the last backup time at scrape time.
type backupCollector struct {
	last func() (time.Time, bool)
}

func (c *backupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descBackupAge }

func (c *backupCollector) Collect(ch chan<- prometheus.Metric) {
	if t, ok := c.last(); ok {
		ch <- prometheus.MustNewConstMetric(descBackupAge, prometheus.GaugeValue, time.Since(t).Seconds())
	}
}

// MirrorPeer is one paired appliance as the mirror metrics show it.
type MirrorPeer struct {
	ID, Name, State string
	LagEntries      int64         // this appliance's changes it has not applied
	Lag             time.Duration // age of the oldest of them
	LagP50, LagP99  time.Duration // recent replication lag of its changes to here
}

// WatchMirror exports each peer's state and lag, read from peers at every
// scrape. Call it once per Metrics.
func (m *Metrics) WatchMirror(peers func() []MirrorPeer) {
	m.once.Lock()
	defer m.once.Unlock()
	if m.mirror {
		panic("admin: WatchMirror called twice")
	}
	m.mirror = true
	m.reg.MustRegister(&mirrorCollector{peers: peers})
}

var (
	descMirrorUp = prometheus.NewDesc("hsmkms_mirror_peer_in_sync",
		"1 when the link with the paired appliance works both ways and it has applied every change, else 0.", []string{"peer", "name", "state"}, nil)
	descMirrorLagEntries = prometheus.NewDesc("hsmkms_mirror_lag_entries",
		"Changes of this appliance the peer has not applied yet.", []string{"peer"}, nil)
	descMirrorLagSeconds = prometheus.NewDesc("hsmkms_mirror_lag_seconds",
		"Age of the oldest change of this appliance the peer has not applied.", []string{"peer"}, nil)
	descMirrorReplication = prometheus.NewDesc("hsmkms_mirror_replication_lag_seconds",
		"Recent time from the peer's commit of a new object to this appliance's, by quantile.", []string{"peer", "quantile"}, nil)
)

type mirrorCollector struct{ peers func() []MirrorPeer }

func (c *mirrorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMirrorUp
	ch <- descMirrorLagEntries
	ch <- descMirrorLagSeconds
	ch <- descMirrorReplication
}

func (c *mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.peers() {
		up := 0.0
		if p.State == "in-sync" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descMirrorUp, prometheus.GaugeValue, up, p.ID, p.Name, p.State)
		ch <- prometheus.MustNewConstMetric(descMirrorLagEntries, prometheus.GaugeValue, float64(p.LagEntries), p.ID)
		ch <- prometheus.MustNewConstMetric(descMirrorLagSeconds, prometheus.GaugeValue, p.Lag.Seconds(), p.ID)
		ch <- prometheus.MustNewConstMetric(descMirrorReplication, prometheus.GaugeValue, p.LagP50.Seconds(), p.ID, "0.5")
		ch <- prometheus.MustNewConstMetric(descMirrorReplication, prometheus.GaugeValue, p.LagP99.Seconds(), p.ID, "0.99")
	}
}
