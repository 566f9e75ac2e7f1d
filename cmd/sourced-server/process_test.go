package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// envRunMain makes the test binary run main instead of the tests, so that
// a test can start the server as a process of its own.
const envRunMain = "SOURCED_SERVER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		os.Args = append([]string{"sourced-server"}, strings.Fields(os.Getenv(envRunMain+"_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serverProcess starts the server as a process with args.
func serverProcess(t *testing.T, args string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRunMain+"=1", envRunMain+"_ARGS="+args)
	return cmd
}

// TestProcessExitStatus: -h and -version exit 0; SIGTERM stops the server
// with status 0 after "stopped".
func TestProcessExitStatus(t *testing.T) {
	for _, args := range []string{"-h", "-version"} {
		out, err := serverProcess(t, args).CombinedOutput()
		require.NoError(t, err, "%s: %s", args, out)
	}
	out, err := serverProcess(t, "-nope").CombinedOutput()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "%v %s", err, out)
	assert.Equal(t, 1, ee.ExitCode(), "a bad flag is an error")

	cmd := serverProcess(t, "-addr 127.0.0.1:0 -shutdown-grace 5s")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stderr)
	var log strings.Builder
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
		if strings.Contains(lines.Text(), `"msg":"sourced-server ready"`) {
			break
		}
	}
	require.Contains(t, log.String(), "sourced-server ready")
	began := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
	}
	require.NoError(t, cmd.Wait(), "a clean stop exits 0\n%s", log.String())
	assert.Less(t, time.Since(began), 10*time.Second)
	assert.Contains(t, log.String(), `"msg":"stopped"`)
}
