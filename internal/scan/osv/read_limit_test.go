package osv

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// repeatReader yields n copies of one byte.
type repeatReader struct {
	b byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	for i := range p {
		p[i] = r.b
	}
	r.n -= int64(len(p))
	return len(p), nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestReadJSONArrayElementOverCap: an element of a JSON array larger than
// MaxRecordSize is rejected as a zip entry over it is, without being read
// into memory whole: reading stops soon after the cap (a 1.9 GiB element
// of an upload does not take 1.9 GiB). The records before it are read.
func TestReadJSONArrayElementOverCap(t *testing.T) {
	const size = 64 << 20
	body := &countingReader{r: io.MultiReader(
		strings.NewReader("[\n"+goodJSON("A-1")+",\n"+`{"id":"BIG","modified":"2024-01-01T00:00:00Z","details":"`),
		&repeatReader{b: 'a', n: size},
		strings.NewReader(`"},`+goodJSON("A-2")+"]"))}
	c := newCollector()
	if err := ReadJSON(context.Background(), body, "big.json", c.fn, c.badFn); err != nil {
		t.Fatalf("ReadJSON: %v", err)
	}
	if !slices.Equal(c.ids, []string{"A-1"}) {
		t.Errorf("records = %v", c.ids)
	}
	err := c.bad["big.json[1]"]
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4194304") {
		t.Errorf("over-cap error = %v (rejections %v)", err, c.bad)
	}
	if body.n > MaxRecordSize+1<<20 {
		t.Errorf("read %d bytes of a %d-byte element, want at most the %d-byte cap and a little", body.n, size, MaxRecordSize)
	}
}

// TestReadJSONArrayElementsAtCap: elements up to the cap, however many,
// are read (the cap is per element, not per file); one just over it is
// rejected and the next ones are still read.
func TestReadJSONArrayElementsAtCap(t *testing.T) {
	pad := func(id string, n int) string {
		head := `{"id":"` + id + `","modified":"2024-01-01T00:00:00Z","details":"`
		return head + strings.Repeat("b", n-len(head)-2) + `"}`
	}
	body := "[" + pad("A-1", MaxRecordSize) + ",\n  " + pad("A-2", MaxRecordSize) + "," + pad("OVER", MaxRecordSize+1) + "," + goodJSON("A-3") + "]"
	c := newCollector()
	if err := ReadJSON(context.Background(), strings.NewReader(body), "cap.json", c.fn, c.badFn); err != nil {
		t.Fatalf("ReadJSON: %v", err)
	}
	if !slices.Equal(c.ids, []string{"A-1", "A-2", "A-3"}) {
		t.Errorf("records = %v", c.ids)
	}
	if err := c.bad["cap.json[2]"]; !errors.Is(err, ErrTooLarge) || len(c.bad) != 1 {
		t.Errorf("rejections = %v", c.bad)
	}
}
