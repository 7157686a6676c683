package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmkms/hsmkms/kmip/ops"
	"github.com/hsmkms/hsmkms/meta"
)

// listPage is how many objects keys list reads per query.
const listPage = 500

func keysCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}
	return &cli.Command{
		Name:  "keys",
		Usage: "inspect managed objects and their grants (metadata only, never key material)",
		Description: "These commands read the SQLite store directly and work while `serve` runs.\n" +
			"IDs are KMIP Unique Identifiers; IDENTITY is a client certificate's CN.",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list every object",
				Flags:  []cli.Flag{dirFlag(), jsonFlag},
				Action: keysList,
			},
			{
				Name:      "show",
				Usage:     "show one object's metadata, attributes and grants",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{dirFlag(), jsonFlag},
				Action:    keysShow,
			},
			{
				Name:      "grant",
				Usage:     "let IDENTITY use object ID besides its owner",
				ArgsUsage: "ID IDENTITY",
				Flags:     []cli.Flag{dirFlag()},
				Action:    keysGrant(true),
			},
			{
				Name:      "revoke-grant",
				Usage:     "take back IDENTITY's grant on object ID",
				ArgsUsage: "ID IDENTITY",
				Flags:     []cli.Flag{dirFlag()},
				Action:    keysGrant(false),
			},
		},
	}
}

func keysList(c *cli.Context) error {
	if c.NArg() != 0 {
		return fmt.Errorf("keys list takes no arguments, got %q", c.Args().Slice())
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	st, err := openStore(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	sums := []ops.Summary{}
	err = st.View(c.Context, func(tx *meta.Tx) error {
		after := ""
		for {
			objs, err := tx.List(after, listPage)
			if err != nil {
				return err
			}
			for _, o := range objs {
				sums = append(sums, ops.Describe(o))
			}
			if len(objs) < listPage {
				return nil
			}
			after = objs[len(objs)-1].ID
		}
	})
	if err != nil {
		return fmt.Errorf("list objects in %s: %w", cfg.Store.Path, err)
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, sums)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTYPE\tSTATE\tALGORITHM\tNAMES\tOWNER\tCREATED")
	for _, s := range sums {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Type, s.State, algorithm(s),
			strings.Join(s.Names, ","), s.Owner, date(s.Created))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%d objects\n", len(sums))
	return nil
}

// shown is keys show's JSON: the summary and who else may use the object.
type shown struct {
	ops.Summary
	Grants []string `json:"grants"`
}

func keysShow(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("keys show takes one argument, the object ID (see `hsmkms keys list`)")
	}
	id := c.Args().First()
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	st, err := openStore(c.Context, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	var out shown
	err = st.View(c.Context, func(tx *meta.Tx) error {
		o, err := tx.Get(id)
		if err != nil {
			return err
		}
		out.Summary = ops.Describe(o)
		out.Grants, err = tx.Grants(id)
		return err
	})
	if errors.Is(err, meta.ErrNotFound) {
		return fmt.Errorf("show object %q: no such object in %s (see `hsmkms keys list`)", id, cfg.Store.Path)
	}
	if err != nil {
		return fmt.Errorf("show object %q: %w", id, err)
	}
	if out.Grants == nil {
		out.Grants = []string{}
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, out)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	s := out.Summary
	row("ID", s.ID)
	row("Type", s.Type)
	row("State", s.State)
	row("Algorithm", algorithm(s))
	row("Names", strings.Join(s.Names, ", "))
	row("Owner", s.Owner)
	row("Grants", strings.Join(out.Grants, ", "))
	row("Created", date(s.Created))
	row("Activation", date(s.Activation))
	row("Deactivation", date(s.Deactivation))
	row("Destroyed", date(s.Destroyed))
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, "Attributes:")
	for _, a := range s.Attributes {
		fmt.Fprintf(c.App.Writer, "  %s\n", a)
	}
	return nil
}

func keysGrant(grant bool) cli.ActionFunc {
	verb := map[bool]string{true: "grant", false: "revoke-grant"}[grant]
	return func(c *cli.Context) error {
		if c.NArg() != 2 {
			return fmt.Errorf("keys %s takes two arguments: ID IDENTITY", verb)
		}
		id, identity := c.Args().Get(0), c.Args().Get(1)
		if identity == "" {
			return fmt.Errorf("keys %s: IDENTITY is empty", verb)
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		_, st, release, err := openAudited(c.Context, cfg)
		if err != nil {
			return err
		}
		defer release()
		err = auditedUpdate(c.Context, st, "keys "+verb, []string{id}, "identity "+identity, func(tx *meta.Tx) error {
			if grant {
				return tx.Grant(id, identity)
			}
			return tx.Revoke(id, identity)
		})
		if errors.Is(err, meta.ErrNotFound) {
			return fmt.Errorf("%s %q on %q: no such object in %s (see `hsmkms keys list`)", verb, identity, id, cfg.Store.Path)
		}
		if err != nil {
			return fmt.Errorf("%s %q on %q: %w", verb, identity, id, err)
		}
		if grant {
			fmt.Fprintf(c.App.Writer, "granted %q use of %s\n", identity, id)
		} else {
			fmt.Fprintf(c.App.Writer, "revoked %q's grant on %s\n", identity, id)
		}
		return nil
	}
}

func algorithm(s ops.Summary) string {
	switch {
	case s.Algorithm == "":
		return "-"
	case s.Length > 0:
		return fmt.Sprintf("%s-%d", s.Algorithm, s.Length)
	}
	return s.Algorithm
}

func date(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
