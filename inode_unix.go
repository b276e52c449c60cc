//go:build unix

package llmgateway

import (
	"os"
	"syscall"
)

// inode identifies the file behind a path, so a same-size rename over it is noticed.
func inode(fi os.FileInfo) any {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return [2]uint64{uint64(st.Dev), st.Ino}
	}
	return nil
}
