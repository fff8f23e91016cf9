// Command disgrafs mounts a JuiceFS volume as a local, graph-aware drive.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/spf13/cobra"

	"github.com/disgrafs/disgrafs/config"
)

func main() {
	// go-redis logs every failed dial itself; our errors already say what failed.
	redis.SetLogger(quietRedis{})
	if err := newRoot().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "disgrafs:", err)
		os.Exit(1)
	}
}

// globals are the flags every command has.
type globals struct {
	configPath string
	verbose    bool
	quiet      bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "disgrafs",
		Short: "DisGraFS mounts a JuiceFS volume as a local, graph-aware drive",
		Long: `DisGraFS mounts a JuiceFS volume as a local POSIX drive.

With no --meta, 'disgrafs mount MOUNTPOINT' creates (on first use) and mounts the
embedded default volume: SQLite metadata and a local object directory under
/var/lib/disgrafs (root) or ~/.local/share/disgrafs. With --meta redis://... it
mounts a shared volume that many nodes can mount at once.

Every flag can also be set in the config file (--config, default
/etc/disgrafs/config.yaml for root, ~/.config/disgrafs/config.yaml otherwise) or
in the environment as DISGRAFS_<FLAG> (DISGRAFS_CACHE_SIZE=10G). Passwords go in
META_PASSWORD, SECRET_KEY or the config file, never on the command line.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "config file (YAML; keys are flag names; 'none' reads no file)")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "log warnings and errors only")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		path, explicit := g.configPath, g.configPath != ""
		if !explicit {
			if p := os.Getenv("DISGRAFS_CONFIG"); p != "" {
				path, explicit = p, true
			} else {
				path = config.DefaultPath()
			}
		}
		if path == "none" {
			path = ""
		}
		f, err := config.Load(path, explicit)
		if err != nil {
			return err
		}
		return config.Apply(cmd.Flags(), f)
	}
	root.AddCommand(newMount(g), newWarmup(), newFormat(g), newUmount(), newStatus(), newVersion(),
		newTag(), newTags(), newFind(), newRelated(), newReindex(), newStats(), newTop())
	return root
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...interface{}) {}
