// Package admin is the appliance's admin HTTP listener: Prometheus metrics on
// /metrics, liveness on /healthz and readiness on /readyz.
//
// It owns the metrics registry and is the only place that imports
// prometheus/client_golang. The packages it measures stay free of it: kmip reports
// through kmip.Observer and kmip.Measure, hsm through Token.Stats, meta through
// Options.OnCommit; cmd wires those hooks to a Metrics.
//
// Invariants:
//   - every metric is registered on the Metrics' own registry, never the global one,
//     so two servers in one process (tests) do not collide;
//   - labels come from small closed sets (operation, result reason, cause, limit,
//     CKR name), never from client identities or object IDs;
//   - /readyz names each failing part ("token", "store", "kmip") and answers 503;
//     /healthz answers 200 whenever the process can serve HTTP.
//
// Usage:
//
//	m := admin.NewMetrics()
//	srv := &kmip.Server{Observer: m, Handler: kmip.Measure(m.ObserveItem)(mux)}
//	st, _ := meta.Open(ctx, path, meta.Options{OnCommit: m.ObserveCommit})
//	m.WatchToken(tok.Stats)
//	a, err := admin.Start("127.0.0.1:9696", admin.Handler(m, checks), log)
//	defer a.Shutdown(ctx)
package admin
