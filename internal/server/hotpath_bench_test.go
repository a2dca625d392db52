package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// BenchmarkHotPaths measures the two request mixes of the bench's
// manifest and small-image rows through a real server on SQLite in its
// default auth mode (token), signed in as a regular user who owns the
// namespace: a manifest GET by tag with a Bearer token, and an image
// pushed with go-containerregistry's remote.Write (blob HEAD, upload
// POST, PATCH, PUT for a layer and a config, then the manifest PUT).
// Run with -cpuprofile to see what the database spends parsing SQL:
//
//	go test ./internal/server -run '^$' -bench HotPaths -benchtime 2000x
func BenchmarkHotPaths(b *testing.B) {
	_, host, cfg := serveServer(b, "sqlite", func(*config.Config) {})
	db, err := meta.Open(context.Background(), cfg.DatabaseURL())
	if err != nil {
		b.Fatal(err)
	}
	hash, _ := auth.HashPassword(pw)
	if _, err := db.Users().CreateUser(context.Background(), meta.User{Username: "dev", SecretHash: hash}); err != nil {
		b.Fatal(err)
	}
	db.Close()
	opts := []remote.Option{remote.WithAuth(&authn.Basic{Username: "dev", Password: pw})}
	push := func(b *testing.B, tag string) v1.Image {
		img, err := random.Image(4096, 1)
		if err != nil {
			b.Fatal(err)
		}
		ref, err := name.ParseReference(host+"/dev/app:"+tag, name.Insecure)
		if err != nil {
			b.Fatal(err)
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			b.Fatal(err)
		}
		return img
	}
	push(b, "latest")

	b.Run("manifest-get-bearer", func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/auth?service=berth&scope=repository:dev/app:pull", nil)
		req.SetBasicAuth("dev", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var tok struct {
			Token string `json:"token"`
		}
		json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if tok.Token == "" {
			b.Fatalf("no token: %d", resp.StatusCode)
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/dev/app/manifests/latest", nil)
				req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
				req.Header.Set("Authorization", "Bearer "+tok.Token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	})
	b.Run("small-image-push", func(b *testing.B) {
		for i := range b.N {
			push(b, fmt.Sprintf("v%d", i))
		}
	})
}
