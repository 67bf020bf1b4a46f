//go:build !unix

package relaybench

import "time"

// cpuTime is 0 where getrusage is not available: the CPU figures then
// read 0.
func cpuTime() time.Duration { return 0 }
