package main

// Push shapes beyond one streamed PATCH: a chunked upload (PATCHes of 5 to
// 50 MiB with Content-Range, as docker's and containerd's chunked mode and
// go-containerregistry with a chunk size send them) and ten streams at once.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"
)

// makeSeededLayer is makeBigLayer with its own content per seed.
func makeSeededLayer(path string, mib int, seed uint64) (*bigLayer, error) {
	var key [32]byte
	copy(key[:], "berth-stream")
	binary.LittleEndian.PutUint64(key[24:], seed)
	return writeLayer(path, mib, key)
}

// makeStreamLayers writes n distinct layers of mib MiB each.
func makeStreamLayers(dir string, n, mib int) ([]*bigLayer, error) {
	out := make([]*bigLayer, n)
	for i := range out {
		l, err := makeSeededLayer(filepath.Join(dir, fmt.Sprintf("stream-%d.bin", i)), mib, uint64(i+1))
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

// chunkSizes splits size into chunks of 5 to 50 MiB, the same for every
// registry (fixed seed).
func chunkSizes(size int64) []int64 {
	rng := rand.New(rand.NewPCG(5, 50))
	var out []int64
	for size > 0 {
		c := min(size, int64(5+rng.IntN(46))<<20)
		out = append(out, c)
		size -= c
	}
	return out
}

// pushChunked uploads the layer with one PATCH per chunk of chunkSizes,
// each with its Content-Range, then an empty PUT ?digest= (pushChunkedBy).
func (r *registry) pushChunked(repo string, layer *bigLayer) error {
	sizes := chunkSizes(layer.size)
	return r.pushChunkedBy(repo, layer, func() int64 {
		n := sizes[0]
		sizes = sizes[1:]
		return n
	})
}

// runChunkedPush times a chunked upload of the big layer; MB/s.
func runChunkedPush(r *registry, repo string, layer *bigLayer) (float64, error) {
	settle()
	start := time.Now()
	if err := r.pushChunked(repo, layer); err != nil {
		return 0, err
	}
	return float64(layer.size) / 1e6 / time.Since(start).Seconds(), nil
}

// runConcurrentPush pushes every layer at once, one stream each (a POST,
// one streamed PATCH, a PUT), into repo; total MB/s.
func runConcurrentPush(r *registry, repo string, layers []*bigLayer) (float64, error) {
	settle()
	var wg sync.WaitGroup
	errs := make([]error, len(layers))
	var total int64
	start := time.Now()
	for i, l := range layers {
		total += l.size
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.pushBlobFile(repo, l.digest, l.path, "patch")
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(total) / 1e6 / elapsed.Seconds(), nil
}
