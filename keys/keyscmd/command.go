// Package keyscmd is the `caddy llm-keys` command: it makes gateway keys and hashes them for
// the keys config of SPEC §12.
package keyscmd

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/llmgw/caddy-llm-gateway/keys"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "llm-keys",
		Usage: "new <name> | hash",
		Short: "Makes and hashes LLM gateway keys",
		Long: `
new <name> prints a fresh random gateway key on its first line ("sk-" and
43 characters of [A-Za-z0-9_-]), then the config lines for it: a key block
for the Caddyfile's keys block and an entry for a keys file, both with its
hash (sha256:<64 lowercase hex>), so no plaintext needs to be kept at rest.

hash reads one line from standard input (the key; its line ending is
stripped) and prints its hash in the form the hash option takes.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(&cobra.Command{
				Use:   "new <name>",
				Short: "Prints a fresh gateway key and its config lines",
				Args:  cobra.ExactArgs(1),
				RunE: func(cmd *cobra.Command, args []string) error {
					return New(cmd.OutOrStdout(), args[0], rand.Reader)
				},
			})
			cmd.AddCommand(&cobra.Command{
				Use:   "hash",
				Short: "Hashes a key read from standard input",
				Args:  cobra.NoArgs,
				RunE: func(cmd *cobra.Command, _ []string) error {
					return Hash(cmd.OutOrStdout(), os.Stdin)
				},
			})
		},
	})
}

// secretBytes is the entropy of a key: 256 bits, 43 characters of base64url.
const secretBytes = 32

// New writes a fresh key named name, read from random, and its config lines to w.
func New(w io.Writer, name string, random io.Reader) error {
	b := make([]byte, secretBytes)
	if _, err := io.ReadFull(random, b); err != nil {
		return fmt.Errorf("reading random bytes: %w", err)
	}
	secret := "sk-" + base64.RawURLEncoding.EncodeToString(b)
	hash := keys.FormatHash(secret)
	if err := (&keys.Key{Name: name, Hash: hash}).Check(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, `%s

# Caddyfile, inside llm_gateway { keys { ... } }:
key %s {
	hash %s
}

# keys file, under keys:
  - name: %s
    hash: %s
`, secret, name, hash, name, hash)
	return err
}

// maxLine bounds the line Hash reads.
const maxLine = 64 << 10

// Hash reads one line from r and writes its hash to w.
func Hash(w io.Writer, r io.Reader) error {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxLine), 4096).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the key: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return errors.New("no key on standard input")
	}
	_, err = fmt.Fprintln(w, keys.FormatHash(line))
	return err
}
