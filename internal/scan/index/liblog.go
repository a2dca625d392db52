package index

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	scalibrlog "github.com/google/osv-scalibr/log"
)

// RouteLibraryLogs sends osv-scalibr's logging (a process-wide setting of
// that library, which otherwise prints to stderr, e.g. for every layer
// without an os-release) to l at debug level: what the extractors say
// about one file is not the operator's business; the scan report's
// warnings carry what matters. The library holds one logger per process,
// so only the first call takes effect (the once guards that global, which
// is the library's, against concurrent servers in one test binary).
func RouteLibraryLogs(l *slog.Logger) {
	routeOnce.Do(func() { scalibrlog.SetLogger(libLogger{l}) })
}

var routeOnce sync.Once

type libLogger struct{ l *slog.Logger }

func (g libLogger) log(format string, args ...any) {
	g.l.Log(context.Background(), slog.LevelDebug, fmt.Sprintf(format, args...), "component", "osv-scalibr")
}

func (g libLogger) Errorf(format string, args ...any) { g.log(format, args...) }
func (g libLogger) Warnf(format string, args ...any)  { g.log(format, args...) }
func (g libLogger) Infof(format string, args ...any)  { g.log(format, args...) }
func (g libLogger) Debugf(format string, args ...any) { g.log(format, args...) }
func (g libLogger) Error(args ...any)                 { g.log("%s", fmt.Sprint(args...)) }
func (g libLogger) Warn(args ...any)                  { g.log("%s", fmt.Sprint(args...)) }
func (g libLogger) Info(args ...any)                  { g.log("%s", fmt.Sprint(args...)) }
func (g libLogger) Debug(args ...any)                 { g.log("%s", fmt.Sprint(args...)) }
