package index

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/google/osv-scalibr/extractor/filesystem/os/apk"
	"github.com/google/osv-scalibr/extractor/filesystem/os/dpkg"
)

// errTooManyPackages is the refusal of a layer over maxLayerPackages.
func errTooManyPackages() error {
	return &unsupportedError{fmt.Sprintf("over %d packages in one layer", maxLayerPackages)}
}

// precount refuses, before extraction, a file that would bring the layer
// over maxLayerPackages: n is an upper bound of the packages the
// extractors would find in it. Extraction holds every package a file
// lists (osv-scalibr's, then Berth's copies) before the cap is checked,
// and a compressed layer of a few MB can list millions.
func (ix *indexer) precount(n int64) error {
	if n > int64(maxLayerPackages-ix.npkgs) {
		return errTooManyPackages()
	}
	return nil
}

// precountRecords is precount for the records c counted, if any.
func (ix *indexer) precountRecords(c *recordCounter) error {
	if c == nil {
		return nil
	}
	return ix.precount(c.count())
}

// wantsRecords reports whether a dpkg status file or an apk installed
// database is among what ws read: files of records separated by blank
// lines, at most one package a record.
func wantsRecords(ws []namedExtractor) bool {
	return slices.ContainsFunc(ws, func(w namedExtractor) bool { return w.name == dpkg.Name || w.name == apk.Name })
}

// recordCounter counts the records of a dpkg status file or an apk
// installed database written to it: runs of lines that are not blank. A
// blank line is "" or "\r" ("\r\n" ends a line for both parsers), the only
// lines that end a record for net/textproto (dpkg) and bufio.Scanner
// (apk); counting "\r" as blank can only count more records, so the count
// bounds the packages either extractor makes.
type recordCounter struct {
	n        int64
	lineLen  int  // bytes of the current line so far, up to 2
	first    byte // its first byte
	inRecord bool // the last complete line was not blank
}

func (c *recordCounter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		line := p
		if i >= 0 {
			line = p[:i]
		}
		if c.lineLen == 0 && len(line) > 0 {
			c.first = line[0]
		}
		c.lineLen = min(c.lineLen+len(line), 2)
		if i < 0 {
			break
		}
		c.endLine()
		p = p[i+1:]
	}
	return n, nil
}

func (c *recordCounter) blank() bool {
	return c.lineLen == 0 || c.lineLen == 1 && c.first == '\r'
}

func (c *recordCounter) endLine() {
	blank := c.blank()
	if !blank && !c.inRecord {
		c.n++
	}
	c.inRecord = !blank
	c.lineLen = 0
}

// count returns the records written so far, a last line without a
// newline included.
func (c *recordCounter) count() int64 {
	if c.lineLen > 0 && !c.blank() && !c.inRecord {
		return c.n + 1
	}
	return c.n
}
