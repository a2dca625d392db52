package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// depsReport is what `berth deps --json` prints.
type depsReport struct {
	Repository string          `json:"repository"`
	Digest     string          `json:"digest"`
	Bases      []depsBase      `json:"bases"`
	Dependents []depsDependent `json:"dependents"`
	// Truncated is true when more dependents may follow than were
	// listed: depsMaxPages stopped the listing (or a registry's answer
	// said it was cut and gave no next_page to go on).
	Truncated bool `json:"truncated"`
}

// depsMaxPages bounds the dependents pages `berth deps` asks for: the API
// reads at most 1,000 dependents per page (readable by the caller or
// not), so at most 50,000 dependents read, as many as one answer read
// before it was paged. Past it, the listing says that more may follow.
const depsMaxPages = 50

type depsBase struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Tags       []struct {
		Name      string `json:"name"`
		PointedAt string `json:"pointed_at"`
		Current   string `json:"current"`
		Moved     bool   `json:"moved"`
	} `json:"tags"`
	Method string `json:"method"`
	Level  int    `json:"level"`
	Moved  bool   `json:"moved"`
}

type depsDependent struct {
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	Tags       []string `json:"tags"`
	Level      int      `json:"level"`
	Method     string   `json:"method"`
	Stale      bool     `json:"stale"`
}

// depsCmd prints what an image is built on and what is built on it.
func depsCmd() *cobra.Command {
	var username string
	var passwordStdin, insecure, asJSON, direct bool
	cmd := &cobra.Command{
		Use:   "deps HOST[:PORT]/REPO[:TAG|@DIGEST]",
		Short: "Show what an image is built on and what is built on it (stale dependents marked)",
		Long: `Show an image's base chain (immediate base first: how each base was
found, the tag it was reached through, and whether that tag has moved on
since) and the images built on it, transitively unless --direct; a
dependent whose base tag has moved on is marked STALE: it should be
rebuilt. The dependents are listed page after page (the API's
next_page), up to 50 pages (50,000 dependents read, yours or not): past
that, the listing says that more may follow (--json: "truncated": true).
The password (or token) comes from standard input with
--password-stdin, or from BERTH_PASSWORD.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, repo, dgst, err := imageClient(cmd, args[0], username, passwordStdin, insecure)
			if err != nil {
				return err
			}
			rep := depsReport{Repository: repo, Digest: dgst}
			var bases struct {
				Bases []depsBase `json:"bases"`
			}
			path := "/api/v1/repository/" + repo + "/manifest/" + dgst
			if err := c.get(cmd.Context(), path+"/bases", nil, &bases); err != nil {
				return err
			}
			if rep.Dependents, rep.Truncated, err = c.dependents(cmd.Context(), path+"/dependents", !direct); err != nil {
				return err
			}
			rep.Bases = bases.Bases
			if rep.Bases == nil {
				rep.Bases = []depsBase{}
			}
			if rep.Dependents == nil {
				rep.Dependents = []depsDependent{}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return printDeps(cmd.OutOrStdout(), c.host, rep)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&username, "username", "u", "", "user, robot (ns+name) or token name")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password or token from standard input")
	f.BoolVar(&insecure, "insecure", false, "use plain HTTP")
	f.BoolVar(&asJSON, "json", false, "print the chain and the dependents as JSON")
	f.BoolVar(&direct, "direct", false, "only images built directly on it")
	return cmd
}

// dependents lists the dependents of every page the API answers,
// following next_page, up to depsMaxPages pages; more says the listing
// stopped there (or at an answer that said it was cut and could not go
// on) with more dependents maybe following.
func (c apiClient) dependents(ctx context.Context, path string, transitive bool) (out []depsDependent, more bool, err error) {
	q := url.Values{"transitive": {fmt.Sprint(transitive)}}
	for range depsMaxPages {
		var page struct {
			Dependents []depsDependent `json:"dependents"`
			Truncated  bool            `json:"truncated"`
			NextPage   string          `json:"next_page"`
		}
		if err := c.get(ctx, path, q, &page); err != nil {
			return nil, false, err
		}
		out = append(out, page.Dependents...)
		if page.NextPage == "" {
			return out, page.Truncated, nil
		}
		q.Set("next_page", page.NextPage)
	}
	return out, true, nil
}

func short(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return d[:len(d)-len(hex)] + hex[:12]
	}
	return d
}

func printDeps(w io.Writer, host string, rep depsReport) error {
	fmt.Fprintf(w, "%s/%s@%s\n\nBUILT ON\n", host, rep.Repository, rep.Digest)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(rep.Bases) == 0 {
		fmt.Fprintln(tw, "  (no base found)")
	}
	for _, b := range rep.Bases {
		var tags []string
		for _, t := range b.Tags {
			s := t.Name
			if t.Moved {
				if t.Current == "" {
					s += " (deleted since)"
				} else {
					s += " (moved to " + short(t.Current) + ")"
				}
			}
			tags = append(tags, s)
		}
		state := ""
		if b.Moved {
			state = "STALE"
		}
		fmt.Fprintf(tw, "  %d\t%s@%s\t%s\tby %s\t%s\n", b.Level, b.Repository, short(b.Digest), strings.Join(tags, ", "), b.Method, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nUSED BY")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(rep.Dependents) == 0 {
		fmt.Fprintln(tw, "  (nothing stored is built on it)")
	}
	for _, d := range rep.Dependents {
		state := ""
		if d.Stale {
			state = "STALE"
		}
		fmt.Fprintf(tw, "  %d\t%s@%s\t%s\tby %s\t%s\n", d.Level, d.Repository, short(d.Digest), strings.Join(d.Tags, ", "), d.Method, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.Truncated {
		fmt.Fprintf(w, "  (more may follow: berth deps reads at most %d pages of the dependents API, %d dependents readable or not)\n", depsMaxPages, depsMaxPages*1000)
	}
	return nil
}
