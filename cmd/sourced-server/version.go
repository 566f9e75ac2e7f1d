package main

import (
	"fmt"
	"runtime/debug"
)

// build says which code a binary was built from, as the Go toolchain
// recorded it: the module version (a tag such as v1.4.0 when built with go
// install ...@v1.4.0, "(devel)" for a build inside a checkout), the VCS
// revision and whether the work tree had changes.
type build struct {
	Version   string
	Revision  string
	Modified  bool
	GoVersion string
}

// readBuild reads the build information of the running binary.
func readBuild() build {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return build{Version: "unknown", Revision: "unknown"}
	}
	return buildOf(bi)
}

// buildOf picks what an operator needs out of the build information.
func buildOf(bi *debug.BuildInfo) build {
	b := build{Version: bi.Main.Version, Revision: "unknown", GoVersion: bi.GoVersion}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the line -version prints.
func (b build) String() string {
	rev := b.Revision
	if b.Modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("sourced-server %s, revision %s, %s", b.Version, rev, b.GoVersion)
}
