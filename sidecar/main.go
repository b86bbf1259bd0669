// Command edgecanary-sidecar receives the edgecanary plugin's per-version
// figures and publishes them as Prometheus metrics, with a status page.
//
// Configuration, as Traefik reads its own: a file (--configFile, YAML or
// TOML), else flags, else EDGECANARY_* environment variables.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/traefik/paerser/cli"
	ptypes "github.com/traefik/paerser/types"
)

// Configuration is the sidecar's configuration.
type Configuration struct {
	ConfigFile string         `description:"Configuration file (YAML or TOML). When set, flags and environment variables are ignored, as in Traefik." json:"configFile,omitempty" toml:"configFile,omitempty" yaml:"configFile,omitempty"`
	Ingest     *IngestConfig  `description:"Where the plugin reports." json:"ingest,omitempty" toml:"ingest,omitempty" yaml:"ingest,omitempty" export:"true"`
	Metrics    *MetricsConfig `description:"Where Prometheus scrapes, with the status page." json:"metrics,omitempty" toml:"metrics,omitempty" yaml:"metrics,omitempty" export:"true"`
	Status     *StatusConfig  `description:"The status page's history." json:"status,omitempty" toml:"status,omitempty" yaml:"status,omitempty" export:"true"`
}

// StatusConfig is the status page's history.
type StatusConfig struct {
	Step ptypes.Duration `description:"How often the history is sampled, from 1s to 1m; it holds 180 samples (5s: the last 15 minutes)." json:"step,omitempty" toml:"step,omitempty" yaml:"step,omitempty"`
}

// SetDefaults sets the status defaults.
func (c *StatusConfig) SetDefaults() {
	c.Step = ptypes.Duration(defaultHistoryStep)
}

// IngestConfig is the listener the plugin reports to.
type IngestConfig struct {
	Address      string `description:"Listen address for reports (POST /v1/reports). Loopback by default." json:"address,omitempty" toml:"address,omitempty" yaml:"address,omitempty"`
	Token        string `description:"Bearer token the plugin must send (sidecar.token). Empty: no token required." json:"token,omitempty" toml:"token,omitempty" yaml:"token,omitempty" loggable:"false"`
	MaxBodyBytes int64  `description:"Largest report accepted, in bytes." json:"maxBodyBytes,omitempty" toml:"maxBodyBytes,omitempty" yaml:"maxBodyBytes,omitempty"`
	MaxSeries    int    `description:"Most series published; a report that would add more is rejected (reason cardinality)." json:"maxSeries,omitempty" toml:"maxSeries,omitempty" yaml:"maxSeries,omitempty"`
}

// MetricsConfig is the scrape listener.
type MetricsConfig struct {
	Address string `description:"Listen address for /metrics, /-/healthy, /-/ready and the status page at /." json:"address,omitempty" toml:"address,omitempty" yaml:"address,omitempty"`
}

// SetDefaults sets the ingest defaults.
func (c *IngestConfig) SetDefaults() {
	c.Address = "127.0.0.1:9191"
	c.MaxBodyBytes = 1 << 20
	c.MaxSeries = defaultMaxSeries
}

// SetDefaults sets the metrics defaults.
func (c *MetricsConfig) SetDefaults() {
	c.Address = ":9190"
}

// NewConfiguration returns the defaults.
func NewConfiguration() *Configuration {
	c := &Configuration{Ingest: &IngestConfig{}, Metrics: &MetricsConfig{}, Status: &StatusConfig{}}
	c.Ingest.SetDefaults()
	c.Metrics.SetDefaults()
	c.Status.SetDefaults()
	return c
}

func (c *Configuration) validate() error {
	if c.Ingest == nil {
		c.Ingest = &IngestConfig{}
		c.Ingest.SetDefaults()
	}
	if c.Metrics == nil {
		c.Metrics = &MetricsConfig{}
		c.Metrics.SetDefaults()
	}
	if c.Status == nil {
		c.Status = &StatusConfig{}
		c.Status.SetDefaults()
	}
	if step := time.Duration(c.Status.Step); step < minHistoryStep || step > maxHistoryStep {
		return fmt.Errorf("status.step: must be from %v to %v, got %v", minHistoryStep, maxHistoryStep, step)
	}
	if _, _, err := net.SplitHostPort(c.Ingest.Address); err != nil {
		return fmt.Errorf("ingest.address: invalid listen address %q: %w", c.Ingest.Address, err)
	}
	if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
		return fmt.Errorf("metrics.address: invalid listen address %q: %w", c.Metrics.Address, err)
	}
	if c.Ingest.MaxBodyBytes <= 0 {
		return fmt.Errorf("ingest.maxBodyBytes: must be above 0, got %d", c.Ingest.MaxBodyBytes)
	}
	if c.Ingest.MaxSeries < 100 || c.Ingest.MaxSeries > 10000000 {
		return fmt.Errorf("ingest.maxSeries: must be from 100 to 10000000, got %d", c.Ingest.MaxSeries)
	}
	return nil
}

// resources are the configuration sources, in Traefik's order: the first
// that yields a configuration wins. Without --configFile, the file is looked
// for as /etc/edgecanary/sidecar.{yml,yaml,toml}, then under
// $XDG_CONFIG_HOME/edgecanary/ and $HOME/.config/edgecanary/, then
// ./edgecanary-sidecar.{yml,yaml,toml}.
func resources() []cli.ResourceLoader {
	return []cli.ResourceLoader{
		&cli.FileLoader{ConfigFileFlag: "configFile", BasePaths: []string{
			"/etc/edgecanary/sidecar", "$XDG_CONFIG_HOME/edgecanary/sidecar", "$HOME/.config/edgecanary/sidecar", "./edgecanary-sidecar",
		}},
		&cli.FlagLoader{},
		&cli.EnvLoader{Prefix: "EDGECANARY_"},
	}
}

func main() { os.Exit(run()) }

func run() int {
	cfg := NewConfiguration()
	cmd := &cli.Command{
		Name:          "edgecanary-sidecar",
		Description:   "Receives the edgecanary plugin's per-version figures and publishes them for Prometheus.",
		Configuration: cfg,
		Resources:     resources(),
		Run: func(_ []string) error {
			if err := cfg.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return serve(ctx, cfg, os.Stderr, nil)
		},
	}
	if err := cli.Execute(cmd); err != nil {
		fmt.Fprintln(os.Stderr, "edgecanary-sidecar:", err)
		return 1
	}
	return 0
}

// serve runs both listeners until ctx ends, then shuts down gracefully. When
// ready is not nil, it receives the bound addresses (ingest, metrics).
func serve(ctx context.Context, cfg *Configuration, logw io.Writer, ready chan<- [2]string) error {
	logger := log.New(logw, "edgecanary-sidecar ", log.LstdFlags)
	st := newStore(cfg.Ingest.MaxSeries)
	step := defaultHistoryStep
	if cfg.Status != nil && time.Duration(cfg.Status.Step) >= minHistoryStep {
		step = time.Duration(cfg.Status.Step)
	}
	hist := newHistory(step)
	now := time.Now

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{store: st, now: now},
	)

	ingestL, err := net.Listen("tcp", cfg.Ingest.Address)
	if err != nil {
		return fmt.Errorf("ingest.address: %w", err)
	}
	metricsL, err := net.Listen("tcp", cfg.Metrics.Address)
	if err != nil {
		_ = ingestL.Close()
		return fmt.Errorf("metrics.address: %w", err)
	}

	readyFlag := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promHandler(reg))
	mux.HandleFunc("/-/healthy", func(rw http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(rw, "OK\n") })
	mux.HandleFunc("/-/ready", func(rw http.ResponseWriter, _ *http.Request) {
		select {
		case <-readyFlag:
			_, _ = io.WriteString(rw, "OK\n")
		default:
			http.Error(rw, "starting", http.StatusServiceUnavailable)
		}
	})
	sp := &statusPages{store: st, history: hist, now: now}
	mux.HandleFunc("/api/status", sp.json)
	mux.HandleFunc("/status/live", sp.fragment)
	mux.HandleFunc("/status.js", staticAsset("text/javascript; charset=utf-8", statusJS))
	mux.HandleFunc("/status.css", staticAsset("text/css; charset=utf-8", statusCSS))
	mux.HandleFunc("/", sp.page)

	ingestMux := http.NewServeMux()
	ingestMux.Handle("/v1/reports", &ingestHandler{store: st, token: cfg.Ingest.Token, maxBody: cfg.Ingest.MaxBodyBytes, now: now})
	ingestMux.HandleFunc("/-/healthy", func(rw http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(rw, "OK\n") })

	servers := []*http.Server{
		{Handler: ingestMux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10},
		{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second},
	}
	errc := make(chan error, 2)
	for i, l := range []net.Listener{ingestL, metricsL} {
		go func(s *http.Server, l net.Listener) {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(servers[i], l)
	}
	logger.Printf("ingest on %s (POST /v1/reports%s), metrics and status page on %s", ingestL.Addr(), tokenNote(cfg.Ingest.Token), metricsL.Addr())
	close(readyFlag)
	if ready != nil {
		ready <- [2]string{ingestL.Addr().String(), metricsL.Addr().String()}
	}

	ticker := time.NewTicker(historyResolution)
	defer ticker.Stop()
	histTicker := time.NewTicker(hist.step)
	defer histTicker.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case t := <-ticker.C:
			st.sample(t)
			st.retire(t)
		case t := <-histTicker.C:
			hist.record(st.snapshot(t), t)
		}
	}
	logger.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdownCtx)
	}
	return runErr
}

func promHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})
}

func tokenNote(token string) string {
	if strings.TrimSpace(token) == "" {
		return ", no token"
	}
	return ", bearer token required"
}
