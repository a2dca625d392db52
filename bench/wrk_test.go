package main

import "testing"

// A report of wrk --latency, in the format of Debian's wrk 4.1 (its
// figures are from a run of the bench).
const wrkOut = `Running 5s test @ http://127.0.0.1:40817/v2/load/manifests/v1
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.61ms    3.12ms  48.20ms   88.61%
    Req/Sec     9.01k     1.20k   11.85k    71.00%
  Latency Distribution
     50%    3.29ms
     75%    4.41ms
     90%    6.80ms
     99%   13.27ms
  89712 requests in 5.01s, 71.36MB read
Requests/sec:  17902.48
Transfer/sec:     14.24MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk([]byte(wrkOut))
	if err != nil {
		t.Fatal(err)
	}
	if r.rps != 17902.48 || r.p50ms != 3.29 || r.p99ms != 13.27 {
		t.Fatalf("parsed %+v, want 17902.48 req/s, p50 3.29 ms, p99 13.27 ms", r)
	}
}

func TestParseWrkUnits(t *testing.T) {
	out := "  Latency Distribution\n     50%  635.91us\n     75%  712.00us\n     90%    1.02ms\n     99%    1.20s\nRequests/sec:   100.00\n"
	r, err := parseWrk([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.p50ms != 0.63591 || r.p99ms != 1200 {
		t.Fatalf("parsed %+v, want p50 0.63591 ms and p99 1200 ms", r)
	}
}

func TestParseWrkRefuses(t *testing.T) {
	for name, out := range map[string]string{
		"errors":     wrkOut + "  Non-2xx or 3xx responses: 12\n",
		"no rate":    "  Latency Distribution\n     50%    3.29ms\n     99%   13.27ms\n",
		"no latency": "Requests/sec:  17902.48\n",
	} {
		if r, err := parseWrk([]byte(out)); err == nil {
			t.Errorf("%s: parsed %+v, want an error", name, r)
		}
	}
}
