// Command demo-app is the demo's web service: it answers with its own
// version, and can be told to fail so that the breaker has something to trip
// on. POST /-/mode with ok, error (500s), flaky (one 500 in ten), slow (800 ms) or
// hang.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("address", "127.0.0.1:8081", "listen address")
	version := flag.String("version", "stable", "the version this instance reports")
	flag.Parse()
	var mode atomic.Value
	mode.Store("ok")
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/-/mode", func(rw http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			b, _ := io.ReadAll(io.LimitReader(req.Body, 64))
			m := strings.TrimSpace(string(b))
			switch m {
			case "ok", "error", "flaky", "slow", "hang":
				mode.Store(m)
			default:
				http.Error(rw, "mode: ok, error, flaky, slow or hang", http.StatusBadRequest)
				return
			}
		}
		fmt.Fprintln(rw, mode.Load())
	})
	mux.HandleFunc("/-/healthy", func(rw http.ResponseWriter, _ *http.Request) { io.WriteString(rw, "OK\n") })
	mux.HandleFunc("/", func(rw http.ResponseWriter, req *http.Request) {
		switch mode.Load() {
		case "error":
			http.Error(rw, *version+" is broken", http.StatusInternalServerError)
			return
		case "flaky":
			if served.Add(1)%10 == 0 {
				http.Error(rw, *version+" is flaky", http.StatusInternalServerError)
				return
			}
		case "slow":
			time.Sleep(800 * time.Millisecond)
		case "hang":
			<-req.Context().Done()
			return
		}
		rw.Header().Set("X-Version", *version)
		fmt.Fprintf(rw, "hello from %s (%s %s)\n", *version, req.Method, req.URL.Path)
	})
	log.Printf("demo-app %s listening on %s", *version, *addr)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}
