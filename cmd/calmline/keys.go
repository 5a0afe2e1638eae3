package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/calmline/calmline/lib/tenant"
)

func init() {
	commands["keys"] = command{
		summary: "create, list, revoke and rotate tenants' API keys (keys new|list|revoke|rotate)",
		run:     keys,
	}
}

const keysUsage = `usage: calmline keys new    --tenant ID [--id KEY-ID] [--role ROLE] [--agent AGENT-ID] [--tenants FILE]
       calmline keys list   [--tenant ID] [--tenants FILE]
       calmline keys revoke --tenant ID --id KEY-ID [--tenants FILE]
       calmline keys rotate --tenant ID --id KEY-ID [--keep DURATION] [--new-id KEY-ID] [--tenants FILE]

Edits the api_keys of the tenants file in place (comments and other settings
are kept) and replaces it atomically; a running calmline reloads it within
seconds (or at once on SIGHUP). A new key is printed once, on standard
output; the file keeps only its SHA-256. list never shows keys or hashes.

  new     adds a key. --role is one the tenants file accepts ("" for a full
          tenant key, care, agent with --agent ...; see docs/configuration.md).
  revoke  disables a key (it stays in the file, refused from the next reload).
  rotate  adds a key with the old key's role and agent and retires the old
          one: disabled at once, or with --keep 24h left working until then
          (its expires_at), so clients can switch without an outage.

The tenants file defaults to DATA-DIR/tenants.yaml (--data-dir, default data),
the file "calmline serve" uses.`

func keys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, keysUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	switch sub {
	case "create":
		sub = "new"
	case "new", "list", "revoke", "rotate":
	default:
		fmt.Fprintf(stderr, "calmline keys: unknown subcommand %q (want new, list, revoke or rotate)\n", sub)
		return 2
	}
	fs := flag.NewFlagSet("calmline keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, keysUsage) }
	dataDir := fs.String("data-dir", "data", "data directory of calmline serve")
	file := fs.String("tenants", "", "tenants file (default DATA-DIR/tenants.yaml)")
	tenantID := fs.String("tenant", "", "tenant id")
	keyID := fs.String("id", "", "key id (new: default TENANT-<random>)")
	var role, agent, newID *string
	var keep *time.Duration
	switch sub {
	case "new":
		role = fs.String("role", "", `key role: "" (full tenant key) or one the tenants file accepts`)
		agent = fs.String("agent", "", "agent id, for role agent")
	case "rotate":
		keep = fs.Duration("keep", 0, "keep the old key working this long (0: disable it now)")
		newID = fs.String("new-id", "", "id of the new key (default TENANT-<random>)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "calmline keys %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	need := func(name, v string) bool {
		if v == "" {
			fmt.Fprintf(stderr, "calmline keys %s: --%s is required\n", sub, name)
			return false
		}
		return true
	}
	if sub != "list" && !need("tenant", *tenantID) || (sub == "revoke" || sub == "rotate") && !need("id", *keyID) {
		return 2
	}
	path := *file
	if path == "" {
		path = filepath.Join(*dataDir, "tenants.yaml")
	}
	f, err := tenant.OpenKeyFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "calmline keys %s: %v\n", sub, err)
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "calmline keys %s: %v\n", sub, err)
		return 1
	}
	switch sub {
	case "list":
		ks, err := f.List(*tenantID)
		if err != nil {
			return fail(err)
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "TENANT\tKEY ID\tROLE\tAGENT\tSTATE")
		now := time.Now()
		for _, k := range ks {
			r := k.Role
			if r == "" {
				r = "-"
			}
			a := k.AgentID
			if a == "" {
				a = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.TenantID, k.ID, r, a, k.State(now))
		}
		w.Flush()
		return 0
	case "revoke":
		if err := f.Revoke(*tenantID, *keyID); err != nil {
			return fail(err)
		}
		if err := f.Save(); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stderr, "calmline keys: key %q of tenant %q disabled in %s\n", *keyID, *tenantID, path)
		return 0
	}
	var id, key string
	if sub == "new" {
		id, key, err = f.Create(*tenantID, tenant.NewKeySpec{ID: *keyID, Role: *role, AgentID: *agent})
	} else {
		id, key, err = f.Rotate(*tenantID, *keyID, *newID, *keep)
	}
	if err != nil {
		return fail(err)
	}
	if err := f.Save(); err != nil {
		return fail(err)
	}
	// The key alone on standard output, so that scripts can capture it;
	// what happened on standard error.
	fmt.Fprintln(stdout, key)
	fmt.Fprintf(stderr, "calmline keys: key %q added to tenant %q in %s; it is shown only now, keep it safe\n", id, *tenantID, path)
	if sub == "rotate" {
		if *keep == 0 {
			fmt.Fprintf(stderr, "calmline keys: old key %q disabled\n", *keyID)
		} else {
			fmt.Fprintf(stderr, "calmline keys: old key %q keeps working until %s\n", *keyID, time.Now().Add(*keep).UTC().Format(time.RFC3339))
		}
	}
	return 0
}
