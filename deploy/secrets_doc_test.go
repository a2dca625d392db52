package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// deployDocs are the files whose instructions and comments the checks
// below read: the deployment guide and every file of deploy/ but the
// tests.
func deployDocs(t *testing.T) map[string]string {
	t.Helper()
	docs := map[string]string{}
	add := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		docs[path] = string(b)
	}
	add("../docs/deployment.md")
	add("../README.md")
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
			return err
		}
		add(path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

var (
	// A secret's value on a command line, where ps and the shell's
	// history show it.
	literalSecret = regexp.MustCompile(`--from-literal=(secretKey|databaseURL|s3AccessKey|s3SecretKey|smtpPassword)=`)
	// gen-env.sh's output redirected into a file without a umask that
	// keeps other users from reading it.
	genEnvRedirect = regexp.MustCompile(`(?m)^(.*)gen-env\.sh > \.env`)
	testFileRef    = regexp.MustCompile(`deploy/[A-Za-z0-9_/]+_test\.go`)
)

// TestDeployDocsKeepSecretsPrivate: the instructions put no secret on a
// command line (kubectl create secret --from-literal) and create .env
// with gen-env.sh under umask 077, not readable by every user; and the
// test files that comments name exist. Before, docs/deployment.md put the
// secretKey, a database URL with its password and the S3 secret key on
// kubectl's command line, `./gen-env.sh > .env` made a world-readable
// file, and compose.yaml, berth.yaml and the dashboard named a
// deploy/deploy_test.go that does not exist.
func TestDeployDocsKeepSecretsPrivate(t *testing.T) {
	for path, text := range deployDocs(t) {
		for _, m := range literalSecret.FindAllString(text, -1) {
			t.Errorf("%s: %s puts a secret on the command line; use --from-env-file with a file made under umask 077", path, m)
		}
		for _, m := range genEnvRedirect.FindAllStringSubmatch(text, -1) {
			if !strings.Contains(m[1], "umask 077") {
				t.Errorf("%s: %q writes .env with the shell's umask (world-readable); run it under umask 077", path, strings.TrimSpace(m[0]))
			}
		}
		for _, ref := range testFileRef.FindAllString(text, -1) {
			if _, err := os.Stat(filepath.Join("..", ref)); err != nil {
				t.Errorf("%s names %s, which does not exist", path, ref)
			}
		}
	}
}
