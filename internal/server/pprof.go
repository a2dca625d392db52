package server

import (
	"net/http"
	"net/http/pprof"
)

// servePprof adds Go's runtime profiles under /debug/pprof/ to the metrics
// listener's mux (metrics.pprof), never to the main listener's. (Importing
// net/http/pprof also registers them on http.DefaultServeMux, which Berth
// never serves.)
func servePprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
