//go:build !unix

package llmgateway

import "os"

// inode is unavailable here; size and modification time identify a version.
func inode(os.FileInfo) any { return nil }
