package main

import (
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "edgecanary"

var (
	descRequests = prometheus.NewDesc(namespace+"_requests_total",
		"Requests routed by edgecanary, by the version that served them (fallbacks included), the status code the client received (0: a stream whose status is not observed) and the method.",
		[]string{"middleware", "version", "code", "method"}, nil)
	descDuration = prometheus.NewDesc(namespace+"_request_duration_seconds",
		"Time from the middleware to the end of the response, by the version that served it.",
		[]string{"middleware", "version"}, nil)
	descRLRejected = prometheus.NewDesc(namespace+"_ratelimit_rejected_total",
		"Requests rejected with 429 by the rate limiter.", []string{"middleware"}, nil)
	descRLDryRun = prometheus.NewDesc(namespace+"_ratelimit_dryrun_rejected_total",
		"Requests the rate limiter would have rejected, let through in dry-run mode.", []string{"middleware"}, nil)
	descRLEvictions = prometheus.NewDesc(namespace+"_ratelimit_evictions_total",
		"Active rate-limit buckets evicted to keep at most maxSources clients.", []string{"middleware"}, nil)
	descStoreErrors = prometheus.NewDesc(namespace+"_ratelimit_store_errors_total",
		"Calls to the rate limit's shared store (rateLimit.redis) that failed or timed out; onError decided those requests.", []string{"middleware"}, nil)
	descStoreUp = prometheus.NewDesc(namespace+"_ratelimit_store_up",
		"1 when every replica reporting with a shared rate-limit store (rateLimit.redis) reached it on its last call, else 0.", []string{"middleware"}, nil)
	descStoreLease = prometheus.NewDesc(namespace+"_ratelimit_store_lease_tokens",
		"How far a replica may run ahead of the shared rate-limit store (rateLimit.redis) for one client: the most tokens one lease holds (0: no lease, one store call per request). The largest of the fresh replicas.", []string{"middleware"}, nil)
	descStoreLeased = prometheus.NewDesc(namespace+"_ratelimit_store_leased_tokens_total",
		"Tokens the replicas took from the shared rate-limit store (rateLimit.redis); less those given back and the requests admitted, what leases took and did not use.", []string{"middleware"}, nil)
	descStoreReturned = prometheus.NewDesc(namespace+"_ratelimit_store_returned_tokens_total",
		"Tokens of leases the replicas gave back to the shared rate-limit store (rateLimit.redis) unspent, with their next call for the client.", []string{"middleware"}, nil)
	descCircuitState = prometheus.NewDesc(namespace+"_circuit_state",
		"Circuit breaker state of a version: 0 closed, 1 half-open, 2 open.", []string{"middleware", "version"}, nil)
	descTransitions = prometheus.NewDesc(namespace+"_circuit_transitions_total",
		"Circuit breaker transitions of a version, by the state entered.", []string{"middleware", "version", "to"}, nil)
	descFallback = prometheus.NewDesc(namespace+"_fallback_total",
		"Requests of a version whose breaker was open, served by another version.", []string{"middleware", "from", "to"}, nil)
	descWeight = prometheus.NewDesc(namespace+"_version_weight",
		"Share of new users assigned to a version, from 0 to 1: as configured, or the rollout's current weight.", []string{"middleware", "version"}, nil)
	descRolloutStep = prometheus.NewDesc(namespace+"_rollout_step",
		"Current step of a progressive rollout (1-based; 0 before its start).", []string{"middleware", "version"}, nil)
	descRolloutState = prometheus.NewDesc(namespace+"_rollout_state",
		"State of a progressive rollout: 0 waiting, 1 progressing, 2 complete, 3 rolled back.", []string{"middleware", "version"}, nil)
	descRolloutChecks = prometheus.NewDesc(namespace+"_rollout_checks_total",
		"Checks of a progressive rollout's windows, by result: pass, fail or inconclusive (fewer than minRequests requests).", []string{"middleware", "version", "result"}, nil)
	descVersionInfo = prometheus.NewDesc(namespace+"_version_info",
		"1 for each configured version; primary=\"true\" marks the version served by the router's own service (stable).", []string{"middleware", "version", "primary"}, nil)
	descReports = prometheus.NewDesc(namespace+"_sidecar_reports_total",
		"Reports accepted from the plugin.", nil, nil)
	descRejected = prometheus.NewDesc(namespace+"_sidecar_reports_rejected_total",
		"Reports rejected, by reason.", []string{"reason"}, nil)
	descLastReport = prometheus.NewDesc(namespace+"_sidecar_last_report_timestamp_seconds",
		"When the last report from a Traefik process (source) arrived, as a Unix time.", []string{"source"}, nil)
)

var transitionNames = []string{"closed", "half_open", "open"}

// rolloutResults name wire.Rollout.Checks, in its order.
var rolloutResults = []string{"pass", "fail", "inconclusive"}

// collector publishes the store as const metrics at scrape time.
type collector struct {
	store *store
	now   func() time.Time
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descDuration, descRLRejected, descRLDryRun, descRLEvictions, descStoreErrors, descStoreUp, descStoreLease, descStoreLeased, descStoreReturned,
		descCircuitState, descTransitions, descFallback, descWeight, descVersionInfo, descReports, descRejected, descLastReport,
		descRolloutStep, descRolloutState, descRolloutChecks} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := c.store.sums(c.now())
	names := make([]string, 0, len(v.mws))
	for n := range v.mws {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, mw := range names {
		t := v.mws[mw]
		for k, n := range t.requests {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), mw, k.version, strconv.Itoa(k.code), k.method)
		}
		for version, h := range t.hist {
			buckets := make(map[float64]uint64, len(h.bounds))
			var cum uint64
			for i, b := range h.bounds {
				cum += h.counts[i]
				buckets[b] = cum
			}
			cum += h.counts[len(h.bounds)]
			ch <- prometheus.MustNewConstHistogram(descDuration, cum, h.sum, buckets, mw, version)
		}
		ch <- prometheus.MustNewConstMetric(descRLRejected, prometheus.CounterValue, float64(t.rlRejected), mw)
		ch <- prometheus.MustNewConstMetric(descRLDryRun, prometheus.CounterValue, float64(t.rlDryRun), mw)
		ch <- prometheus.MustNewConstMetric(descRLEvictions, prometheus.CounterValue, float64(t.rlEvictions), mw)
		if up, ok := v.storeUp[mw]; ok {
			ch <- prometheus.MustNewConstMetric(descStoreErrors, prometheus.CounterValue, float64(t.storeErrors), mw)
			gauge := 0.0
			if up {
				gauge = 1
			}
			ch <- prometheus.MustNewConstMetric(descStoreUp, prometheus.GaugeValue, gauge, mw)
			ch <- prometheus.MustNewConstMetric(descStoreLease, prometheus.GaugeValue, float64(v.lease[mw]), mw)
			ch <- prometheus.MustNewConstMetric(descStoreLeased, prometheus.CounterValue, float64(t.storeLeased), mw)
			ch <- prometheus.MustNewConstMetric(descStoreReturned, prometheus.CounterValue, float64(t.storeReturned), mw)
		}
		for k, n := range t.fallbacks {
			ch <- prometheus.MustNewConstMetric(descFallback, prometheus.CounterValue, float64(n), mw, k.from, k.to)
		}
		if ro, ok := v.rollout[mw]; ok {
			ch <- prometheus.MustNewConstMetric(descRolloutStep, prometheus.GaugeValue, float64(ro.Step), mw, ro.Version)
			ch <- prometheus.MustNewConstMetric(descRolloutState, prometheus.GaugeValue, float64(ro.State), mw, ro.Version)
			for i, result := range rolloutResults {
				ch <- prometheus.MustNewConstMetric(descRolloutChecks, prometheus.CounterValue, float64(t.rolloutChecks[i]), mw, ro.Version, result)
			}
		}
		for version, tr := range t.transitions {
			for i, n := range tr {
				ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(n), mw, version, transitionNames[i])
			}
		}
		for version, g := range v.gauges[mw] {
			ch <- prometheus.MustNewConstMetric(descCircuitState, prometheus.GaugeValue, float64(g.state), mw, version)
			if g.configured {
				ch <- prometheus.MustNewConstMetric(descWeight, prometheus.GaugeValue, g.weight, mw, version)
				ch <- prometheus.MustNewConstMetric(descVersionInfo, prometheus.GaugeValue, 1, mw, version, strconv.FormatBool(g.primary))
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descReports, prometheus.CounterValue, float64(v.reports))
	for reason, n := range v.rejected {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(n), reason)
	}
	for src, t := range v.lastReport {
		ch <- prometheus.MustNewConstMetric(descLastReport, prometheus.GaugeValue, float64(t.UnixNano())/1e9, src)
	}
}
