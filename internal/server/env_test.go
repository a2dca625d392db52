package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// These tests build Berth the way `berth serve` does, through server.New:
// what they test is the composition (configuration, routes, workers), so
// they do not use internal/testenv, which assembles the parts below it.

// startServer builds a server from the default configuration (a fresh
// data directory, no fsync) as changed by edit, serves its handler, and
// opens a second handle on its metadata store for the test to seed and
// inspect. Everything is closed when the test ends.
func startServer(t *testing.T, edit func(*config.Config)) (*server.Server, *httptest.Server, *meta.DB) {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	edit(&cfg)
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	db, err := meta.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return srv, hs, db
}

// serveConfig serves a server built from the default configuration (on a
// fresh data directory, without scanning) as changed by edit.
func serveConfig(t *testing.T, edit func(*config.Config)) *httptest.Server {
	t.Helper()
	_, hs, _ := startServer(t, func(cfg *config.Config) {
		cfg.Scan.Enabled = false
		edit(cfg)
	})
	return hs
}

// serveLive serves a server with its background work (the change feed,
// the job workers) on a loopback listener, from the default configuration
// (a fresh data directory, no scanning, webhooks allowed on loopback) as
// changed by edit, and returns its host:port and configuration. It stops
// when the test ends.
func serveLive(t *testing.T, dialect string, edit func(*config.Config)) (string, config.Config) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	cfg.Scan.Enabled = false
	cfg.Notifications.AllowedHosts = []string{"loopback"}
	if dialect == "postgres" {
		cfg.Database.URL = metatest.PostgresDSN(t)
		cfg.SecretKey = testSecretKey // replicas on PostgreSQL share one key
	}
	edit(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	return ln.Addr().String(), cfg
}
