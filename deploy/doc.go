// Package deploy holds no code: its tests keep the deployment files of this
// directory true to the binary. They load the compose setup's and the Helm
// chart's Berth configuration and BERTH_* variables through Berth's own
// configuration loader, and check every metric the Grafana dashboard
// queries against a scrape of a running server.
package deploy
