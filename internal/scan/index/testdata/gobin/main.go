// Command gobin is a small Go program with module dependencies, built by the
// index tests to get a Go binary with real build info. It only imports
// modules the index package itself requires.
package main

import (
	"fmt"

	"github.com/google/osv-scalibr/purl"
	"github.com/klauspost/compress/zstd"
)

func main() {
	fmt.Println(purl.TypeDebian, zstd.SpeedDefault)
}
