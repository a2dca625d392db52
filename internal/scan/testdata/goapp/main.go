// Command goapp is built by the scanner's tests: a real Go binary whose
// build info lists real modules of this project (at the versions go.mod
// pins), for the Go binary extractor to find.
package main

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
)

func main() {
	fmt.Println(digest.FromString(uuid.NewString()))
}
