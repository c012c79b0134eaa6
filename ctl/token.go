package ctl

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/holdfast/holdfast/auth"
)

// TokenUsage is the usage text of the token commands, which need no
// server.
const TokenUsage = `  token new                           print a fresh random API token (256 bits)
  token hash ROLE NAME                read a token on stdin, print its --auth-file line
                                      (ROLE: admin, checkout or read)
`

// tokenCmd runs "token new" and "token hash ROLE NAME" (args start after
// "token"). The token itself is never written anywhere but stdout by
// "new"; "hash" prints only the line the server's --auth-file stores:
//
//	TOKEN=$(holdfast ctl token new)
//	echo "$TOKEN" | holdfast ctl token hash checkout checkout-svc >> tokens
func tokenCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("token: want new or hash")
	}
	switch args[0] {
	case "new":
		if len(args) != 1 {
			return usagef("token new takes no arguments")
		}
		tok, err := auth.NewToken()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, tok)
		return err
	case "hash":
		if len(args) != 3 {
			return usagef("token hash ROLE NAME (the token on stdin)")
		}
		role, err := auth.ParseRole(args[1])
		if err != nil {
			return usagef("token hash: %v", err)
		}
		sc := bufio.NewScanner(io.LimitReader(stdin, 4096))
		if !sc.Scan() {
			return usagef("token hash: no token on stdin")
		}
		tok := strings.TrimSpace(sc.Text())
		if len(tok) < 16 {
			return usagef("token hash: a token must be at least 16 characters (use token new)")
		}
		line := auth.FormatEntry(role, args[2], []byte(tok))
		// The line must parse back: a bad name is refused here, not at
		// the server's next reload.
		if _, err := auth.Parse(strings.NewReader(line)); err != nil {
			return usagef("token hash: %v", err)
		}
		_, err = fmt.Fprintln(stdout, line)
		return err
	}
	return usagef("token: unknown command %q (want new or hash)", args[0])
}
