package audit

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/goccy/go-json"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "llm-audit",
		Usage: "[--db <path|glob>]... [--by model|backend|ip|day|key] [--since <date>] [--until <date>] [--json]",
		Short: "Summarises LLM gateway usage from the audit database",
		Long: `
Sums requests, prompt/completion/total tokens and errors (status >= 400) from
the llm_audit SQLite database and its monthly archives (<stem>_YYYYMM.db
beside it), grouped by model, backend, client IP, day or gateway key; with a COST_USD
column (from the gateway's prices) when grouped by key or when any row has a
cost.

--db defaults like the llm_audit app's path: $RECD_PATH without "sqlite:",
else ./logs/record.db. It may be given several times and may be a glob
('logs/node-*.db', quoted for the shell), to report several gateway nodes'
databases as one: the report is the sum over the files, each counted once. --since and --until take local dates (YYYY-MM-DD) and
are inclusive. --json prints the summary as JSON instead of a table.`,
		CobraFunc: func(cmd *cobra.Command) {
			addFlags(cmd)
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
				return runLLMAudit(fl, os.Stdout)
			})
		},
	})
}

func addFlags(cmd *cobra.Command) {
	cmd.Flags().StringArray("db", nil, "Audit database path or glob; repeatable (default: $RECD_PATH, else "+DefaultPath+")")
	cmd.Flags().String("by", ByModel, "Group by model, backend, ip, day or key")
	cmd.Flags().String("since", "", "First day to include (YYYY-MM-DD, local time)")
	cmd.Flags().String("until", "", "Last day to include (YYYY-MM-DD, local time)")
	cmd.Flags().Bool("json", false, "Print JSON")
}

const dateLayout = "2006-01-02"

// runLLMAudit is the llm-audit command, printing to out.
func runLLMAudit(fl caddycmd.Flags, out io.Writer) (int, error) {
	paths, err := fl.GetStringArray("db")
	if err != nil {
		return exitFailure, err
	}
	if len(paths) == 0 {
		paths = []string{pathFromEnv(os.Getenv(envPath))}
	}
	opt := SummaryOptions{By: fl.String("by")}
	if s := fl.String("since"); s != "" {
		if opt.Since, err = time.ParseInLocation(dateLayout, s, time.Local); err != nil {
			return exitFailure, fmt.Errorf("--since: %w", err)
		}
	}
	if s := fl.String("until"); s != "" {
		day, err := time.ParseInLocation(dateLayout, s, time.Local)
		if err != nil {
			return exitFailure, fmt.Errorf("--until: %w", err)
		}
		opt.Until = day.AddDate(0, 0, 1) // inclusive day: up to the next midnight
	}
	files, err := DatabaseFilesOf(paths)
	if err != nil {
		return exitFailure, err
	}
	sum, err := Summarize(files, opt)
	if err != nil {
		return exitFailure, err
	}
	if fl.Bool("json") {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		err = enc.Encode(sum)
	} else {
		err = WriteTable(out, sum)
	}
	if err != nil {
		return exitFailure, err
	}
	return 0, nil
}

// exitFailure is the exit status of a failed command.
const exitFailure = 1

// WriteTable prints sum as an aligned text table, keys left and numbers
// right, ending with a total line. A COST_USD column follows when grouped by
// key or when any row has a cost.
func WriteTable(w io.Writer, sum *Summary) error {
	cost := sum.By == ByKey || sum.Total.CostUSD > 0
	rows := make([][]string, 0, len(sum.Groups)+2)
	head := []string{strings.ToUpper(sum.By), "REQUESTS", "PROMPT", "COMPLETION", "TOTAL", "ERRORS"}
	if cost {
		head = append(head, "COST_USD")
	}
	rows = append(rows, head)
	num := func(n int64) string { return strconv.FormatInt(n, 10) }
	for _, u := range slices.Concat(sum.Groups, []Usage{sum.Total}) {
		key := u.Key
		if key == "" {
			key = "-"
		}
		row := []string{key, num(u.Requests), num(u.PromptTokens), num(u.CompletionTokens), num(u.TotalTokens), num(u.Errors)}
		if cost {
			row = append(row, strconv.FormatFloat(u.CostUSD, 'f', 4, 64))
		}
		rows = append(rows, row)
	}
	var width [7]int
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s", width[0], r[0])
		for i := 1; i < len(r); i++ {
			fmt.Fprintf(&b, "  %*s", width[i], r[i])
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
