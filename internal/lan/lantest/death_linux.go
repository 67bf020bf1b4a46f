package lantest

import (
	"os/exec"
	"syscall"
)

// DieWithParent has the kernel kill cmd when the test process dies. "ip
// netns exec" execs the binary in place, so the signal reaches the child
// itself.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
