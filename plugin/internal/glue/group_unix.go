//go:build unix

package glue

import (
	"errors"
	"os/exec"
	"syscall"
)

// ownGroup makes cmd's process the leader of a process group of its own,
// which its children join, so that KillGroup reaches them too.
func ownGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// KillGroup kills what is left of the process group that the plugin
// process pid led (started with Launch.OwnGroup): the processes the
// plugin started, which outlive it otherwise. Call it once the plugin
// has exited; a group with nobody left is no error.
func KillGroup(pid int) error {
	if pid <= 0 {
		return nil
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
