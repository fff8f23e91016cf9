package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// HandleSignals cancels the run on the first SIGINT/SIGTERM/SIGHUP and keeps
// catching later ones until done, so that a second Ctrl-C cannot kill the
// process while it cleans up (unmounts, stops its servers). prog prefixes
// the messages; stopping and waiting say what happens.
func HandleSignals(prog, stopping, waiting string, cancel context.CancelFunc, done <-chan struct{}) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	first := true
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			if first {
				fmt.Fprintf(os.Stderr, "%s: %s: %s\n", prog, s, stopping)
				cancel()
				first = false
			} else {
				fmt.Fprintf(os.Stderr, "%s: %s: %s\n", prog, s, waiting)
			}
		}
	}
}

// Main runs run under a context that the first SIGINT, SIGTERM or SIGHUP
// cancels (see HandleSignals) and returns the exit code: 0, or 1 with the
// error printed after prog.
func Main(prog, stopping, waiting string, run func(ctx context.Context) error) int {
	// A closed log pipe (tee killed by Ctrl-C) must not kill us before we clean up.
	signal.Ignore(syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go HandleSignals(prog, stopping, waiting, cancel, done)
	err := run(ctx)
	close(done)
	cancel()
	if err == nil {
		return 0
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, prog+": interrupted:", err)
	} else {
		fmt.Fprintln(os.Stderr, prog+":", err)
	}
	return 1
}
