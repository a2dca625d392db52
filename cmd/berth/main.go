// Command berth is the Berth container registry: one binary that serves the
// registry and administers it.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/server"
)

// Set by the linker: -ldflags "-X main.version=v1.2.3 -X main.commit=abc".
var (
	version = "dev"
	commit  = ""
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	root.AddCommand(serveCmd(), adminCmd(), importCmd(), vulnsCmd(), versionCmd())
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit",
		Run: func(cmd *cobra.Command, _ []string) {
			c := commit
			if c == "" {
				c = "unknown"
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							c = s.Value
						}
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "berth %s (commit %s)\n", version, c)
		},
	}
}

// settings are the flags every command that opens the data shares.
type settings struct {
	configFile, addr, dataDir, database, auth, logLevel string
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

// load builds the configuration: defaults, then the file, then BERTH_*
// variables, then flags; and validates it.
func (st *settings) load(cmd *cobra.Command) (config.Config, error) {
	cfg := config.Default()
	if st.configFile != "" {
		if err := cfg.LoadFile(st.configFile); err != nil {
			return cfg, err
		}
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
			srv, err := server.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer srv.Close()
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
