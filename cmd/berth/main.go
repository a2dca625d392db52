// Command berth is the Berth container registry: one binary that serves the
// registry and administers it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/server"
)

// Set by the linker: -ldflags "-X main.version=v1.2.3 -X main.commit=abc";
// when empty, `berth version` reads the binary's build information.
var (
	version = ""
	commit  = ""
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts a graceful stop; a second one ends the
		// process at once (the default handling), rather than waiting out
		// shutdownDelay and shutdownTimeout. The default is restored
		// before the stop begins: once anything shows the stop (/readyz
		// answering 503), a second signal is not swallowed (with
		// signal.NotifyContext it was restored after, and a second SIGTERM
		// sent at once was lost on a loaded machine).
		<-sigs
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		cancel()
	}()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		var ec *exitCodeError
		if errors.As(err, &ec) {
			os.Exit(ec.code)
		}
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Berth: a self-hosted OCI container registry",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(serveCmd(), adminCmd(), importCmd(), vulnsCmd(), depsCmd(), promoteCmd(), checkCmd(), gateCmd(), versionCmd())
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Long: `Print the version, commit and Go version of this binary, from what the
linker stamped (-ldflags "-X main.version=... -X main.commit=...") or else
from the build information Go records: the module version, and the VCS
revision unless the binary was built with -buildvcs=false.`,
		Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				bi = nil
			}
			fmt.Fprint(cmd.OutOrStdout(), readBuildVersion(bi, version, commit))
		},
	}
}

// buildVersion is what `berth version` reports.
type buildVersion struct {
	Version   string
	Commit    string // "" when unknown
	From      string // where Commit came from
	Modified  bool   // built from a working tree with uncommitted changes
	Time      string // commit time (vcs.time)
	GoVersion string
}

// pseudoRevision matches the revision at the end of a Go pseudo-version
// (v0.0.0-20240102150405-abcdef123456, v1.2.4-0.20240102150405-abcdef123456).
var pseudoRevision = regexp.MustCompile(`[.-]\d{14}-([0-9a-f]{12})(?:\+.*)?$`)

// readBuildVersion resolves the version and commit: what the linker
// stamped wins; then the build information's VCS settings (absent with
// -buildvcs=false); then the revision inside a pseudo-version, which `go
// install module@commit` records even without VCS stamping.
func readBuildVersion(bi *debug.BuildInfo, stampedVersion, stampedCommit string) buildVersion {
	v := buildVersion{Version: stampedVersion, Commit: stampedCommit}
	if v.Commit != "" {
		v.From = "stamped by the linker"
	}
	if bi != nil {
		v.GoVersion = bi.GoVersion
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if v.Commit == "" && settings["vcs.revision"] != "" {
			v.Commit, v.From = settings["vcs.revision"], "vcs.revision"
			v.Modified = settings["vcs.modified"] == "true"
			v.Time = settings["vcs.time"]
		}
		if m := pseudoRevision.FindStringSubmatch(bi.Main.Version); v.Commit == "" && m != nil {
			v.Commit, v.From = m[1], "module pseudo-version"
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	return v
}

func (v buildVersion) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "berth %s\n", v.Version)
	switch {
	case v.Commit == "":
		b.WriteString("commit:  unknown: built without VCS information (-buildvcs=false, GOFLAGS=-buildvcs=false, or outside a git checkout)\n")
		b.WriteString(`         stamp it: go build -ldflags "-X main.version=$(git describe --tags --always) -X main.commit=$(git rev-parse HEAD)" ./cmd/berth` + "\n")
	case v.Modified:
		fmt.Fprintf(&b, "commit:  %s (%s; built with uncommitted changes)\n", v.Commit, v.From)
	default:
		fmt.Fprintf(&b, "commit:  %s (%s)\n", v.Commit, v.From)
	}
	if v.Time != "" {
		fmt.Fprintf(&b, "time:    %s\n", v.Time)
	}
	if v.GoVersion != "" {
		fmt.Fprintf(&b, "go:      %s\n", v.GoVersion)
	}
	return b.String()
}

// settings are the flags every command that opens the data shares.
type settings struct {
	configFile, addr, dataDir, database, auth, logLevel string
}

// openStore opens the metadata database of a configuration for a tool
// (berth admin, berth import): durable commits as the server's when
// storage.filesystem.fsync is on; a database at an older schema version
// refused rather than migrated (berth admin migrate does that), so that a
// newer binary's tool does not take running servers out of service; and
// a database that does not exist refused rather than created
// (meta.MustExist), so that a tool pointed at the wrong place (a shell
// without BERTH_DATABASE_URL, a typo in --data-dir) works on nothing
// rather than on an empty database: against one, berth admin gc took every
// blob in storage for a crash's leftover.
func openStore(ctx context.Context, cfg config.Config) (*meta.DB, error) {
	opts := []meta.Option{meta.NoUpgrade(), meta.MustExist(), expirationBounds(cfg)}
	if cfg.Storage.Filesystem.Fsync {
		opts = append(opts, meta.SyncFull())
	}
	db, err := meta.Open(ctx, cfg.DatabaseURL(), opts...)
	if errors.Is(err, meta.ErrNoDatabase) {
		return nil, fmt.Errorf("database %s: %w; refusing to create one: check --data-dir, --database, database.url and BERTH_DATABASE_URL "+
			"(berth serve or berth admin migrate creates a new registry's database)", cfg.DatabaseLocation(), err)
	}
	return db, err
}

// expirationBounds bounds the tag expirations a tool sets (berth import's
// quay.expires-after labels) as berth serve does.
func expirationBounds(cfg config.Config) meta.Option {
	return meta.TagExpirationBounds(cfg.Lifecycle.ExpirationMinimum, cfg.Lifecycle.ExpirationMaximum)
}

// openOrCreateStore is openStore for berth admin user create, which makes
// the first user of a new registry before its first start: it creates a
// database that does not exist, and says so on w.
func openOrCreateStore(ctx context.Context, cfg config.Config, w io.Writer) (*meta.DB, error) {
	db, err := openStore(ctx, cfg)
	if !errors.Is(err, meta.ErrNoDatabase) {
		return db, err
	}
	opts := []meta.Option{meta.NoUpgrade(), expirationBounds(cfg)}
	if cfg.Storage.Filesystem.Fsync {
		opts = append(opts, meta.SyncFull())
	}
	if db, err = meta.Open(ctx, cfg.DatabaseURL(), opts...); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "note: created a new database at %s\n", cfg.DatabaseLocation())
	return db, nil
}

func (st *settings) register(cmd *cobra.Command, serve bool) {
	f := cmd.PersistentFlags()
	f.StringVar(&st.configFile, "config", "", "YAML configuration file")
	f.StringVar(&st.dataDir, "data-dir", "", "data directory for the embedded defaults (default ./berth-data)")
	f.StringVar(&st.database, "database", "", "metadata database: postgres://... (default SQLite in the data directory)")
	if serve {
		f.StringVar(&st.addr, "addr", "", "listen address HOST:PORT (default :5000)")
		f.StringVar(&st.auth, "auth", "", "authentication mode: token (default) or none")
		f.StringVar(&st.logLevel, "log-level", "", "debug, info, warn or error")
	}
}

// load builds the configuration: defaults (Berth's, then the file
// BERTH_CONFIG_DEFAULTS names), then the --config file, then BERTH_*
// variables (one that names no setting is refused, as an unknown key of
// the file is), then flags; and validates it.
func (st *settings) load(cmd *cobra.Command) (config.Config, error) {
	cfg := config.Default()
	if f := os.Getenv(config.DefaultsFileVariable); f != "" {
		if err := cfg.LoadFile(f); err != nil {
			return cfg, fmt.Errorf("%s: %w", config.DefaultsFileVariable, err)
		}
	}
	if st.configFile != "" {
		if err := cfg.LoadFile(st.configFile); err != nil {
			return cfg, err
		}
	}
	if err := config.CheckEnv(os.Environ()); err != nil {
		return cfg, fmt.Errorf("environment:\n%w", err)
	}
	if err := cfg.LoadEnv(os.LookupEnv); err != nil {
		return cfg, fmt.Errorf("environment: %w", err)
	}
	set := func(name string, dst *string, v string) {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			*dst = v
		}
	}
	set("addr", &cfg.Addr, st.addr)
	set("data-dir", &cfg.DataDir, st.dataDir)
	set("database", &cfg.Database.URL, st.database)
	set("auth", &cfg.Auth.Mode, st.auth)
	set("log-level", &cfg.Log.Level, st.logLevel)
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

func serveCmd() *cobra.Command {
	var st settings
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the registry. With no settings it listens on :5000 and keeps everything
in ./berth-data (blobs on the filesystem, metadata in SQLite), and requires
authentication for every push and every pull of a private repository
(create the first user with "berth admin user create").

Settings come from defaults, then --config FILE (YAML), then BERTH_*
environment variables (BERTH_ADDR, BERTH_DATA_DIR, BERTH_DATABASE_URL,
BERTH_AUTH_MODE, BERTH_LOG_LEVEL, ...), then these flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := st.load(cmd)
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log)
			defer server.HeapFloor(cfg.Runtime.GCHeapFloorBytes, os.Getenv, log)()
			srv, err := server.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer srv.Close()
			// After New: its pools are sized on Go's own GOMAXPROCS.
			defer server.ExtraProcs(cfg.Runtime.ExtraProcs, os.Getenv, log)()
			return srv.Run(cmd.Context())
		},
	}
	st.register(cmd, true)
	return cmd
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
