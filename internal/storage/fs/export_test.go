package fs

import (
	"os"

	"github.com/berth-dev/berth/internal/storage"
)

// SetOpenDirect replaces how d opens files for direct I/O.
func SetOpenDirect(d *Driver, open func(string) (*os.File, error)) { d.openDirect = open }

// SetDatasync replaces how d's writers flush their file on Close.
func SetDatasync(d *Driver, sync func(*os.File) error) { d.datasync = sync }

// DirectBytes is how many bytes w wrote with direct I/O.
func DirectBytes(w storage.FileWriter) int64 { return w.(*writer).directBytes }

// OpenDirect is the platform's direct-I/O open.
var OpenDirect = openDirect
