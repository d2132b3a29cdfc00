"""Load tests of the gateway: the request file, the k6 script and locustfile, the runner behind `make loadtest`
and its report (docs/results/latency.*)."""
