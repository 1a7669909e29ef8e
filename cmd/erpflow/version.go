package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Version overrides the module version from the build info when set at
// build time with -ldflags "-X main.Version=v1.2.3".
var Version string

func init() {
	commandBuilders = append(commandBuilders, func() *cobra.Command {
		return &cobra.Command{
			Use:   "version",
			Short: "Print the version, the VCS revision it was built from, and the Go version",
			Args:  cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				fmt.Fprintln(c.OutOrStdout(), "erpflow", versionString())
				return nil
			},
		}
	})
}

// moduleVersion is the version sent as User-Agent and shown by the API:
// Version when set, else the module version go build recorded ("devel"
// for a build from a work tree without a version).
func moduleVersion() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

// versionString is moduleVersion with the VCS revision and time, whether
// the tree had local changes, and the Go version and platform.
func versionString() string {
	var details []string
	if info, ok := debug.ReadBuildInfo(); ok {
		s := map[string]string{}
		for _, kv := range info.Settings {
			s[kv.Key] = kv.Value
		}
		if rev := s["vcs.revision"]; rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if s["vcs.modified"] == "true" {
				rev += "+modified"
			}
			details = append(details, "commit "+rev)
		}
		if t := s["vcs.time"]; t != "" {
			details = append(details, t)
		}
	}
	details = append(details, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
	return moduleVersion() + " (" + strings.Join(details, ", ") + ")"
}
