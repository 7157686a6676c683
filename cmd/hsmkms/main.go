package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time: go build -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args))
}

// run executes the app and turns its error into one line on stderr and an exit status
// (exit.go).
func run(args []string) int {
	if err := newApp().Run(args); err != nil {
		fmt.Fprintf(os.Stderr, "hsmkms: %v\n", err)
		return exitCode(err)
	}
	return 0
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "hsmkms",
		Usage:   "a KMIP key server whose keys live in an HSM",
		Version: version,
		Description: "Start with `hsmkms init --dir DIR`, then `hsmkms serve --dir DIR`.\n" +
			"Every command takes --dir, the appliance directory (or HSMKMS_DIR).",
		Commands: []*cli.Command{
			initCommand(),
			serveCommand(),
			certsCommand(),
			keysCommand(),
			benchCommand(),
			conformanceCommand(),
			configCommand(),
			auditCommand(),
			backupCommand(),
			kekCommand(),
			mirrorCommand(),
			versionCommand(),
		},
		// Errors are printed once by run, not by urfave/cli's handler, which would
		// also exit the process before deferred cleanups ran.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
