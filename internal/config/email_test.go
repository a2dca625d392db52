package config

import (
	"strings"
	"testing"
)

// TestValidateEmailSettings: with notifications.smtpAddr set, a relay
// address without a port, a missing or malformed sender, or a username
// without a password (or the reverse) stops the server at start, naming
// the setting. Before, the server started, accepted email notifications
// and every delivery failed.
func TestValidateEmailSettings(t *testing.T) {
	valid := Notifications{Workers: 4, SMTPAddr: "mail.example.com:587", SMTPFrom: "Berth <berth@registry.example.com>",
		SMTPUsername: "berth", SMTPPassword: "s3cret-pass"}
	for name, tc := range map[string]struct {
		edit func(*Notifications)
		want string // "" passes
	}{
		"valid":                 {func(*Notifications) {}, ""},
		"no credentials":        {func(n *Notifications) { n.SMTPUsername, n.SMTPPassword = "", "" }, ""},
		"bare sender":           {func(n *Notifications) { n.SMTPFrom = "berth@registry.example.com" }, ""},
		"email off":             {func(n *Notifications) { *n = Notifications{Workers: 4} }, ""},
		"no port":               {func(n *Notifications) { n.SMTPAddr = "mail.example.com" }, "notifications.smtpAddr"},
		"empty port":            {func(n *Notifications) { n.SMTPAddr = "mail.example.com:" }, "notifications.smtpAddr"},
		"port not a number":     {func(n *Notifications) { n.SMTPAddr = "mail.example.com:smtp" }, "notifications.smtpAddr"},
		"port out of range":     {func(n *Notifications) { n.SMTPAddr = "mail.example.com:70000" }, "notifications.smtpAddr"},
		"port zero":             {func(n *Notifications) { n.SMTPAddr = "mail.example.com:0" }, "notifications.smtpAddr"},
		"no host":               {func(n *Notifications) { n.SMTPAddr = ":25" }, "notifications.smtpAddr"},
		"no sender":             {func(n *Notifications) { n.SMTPFrom = "" }, "notifications.smtpFrom"},
		"malformed sender":      {func(n *Notifications) { n.SMTPFrom = "berth at example" }, "notifications.smtpFrom"},
		"username, no password": {func(n *Notifications) { n.SMTPPassword = "" }, "notifications.smtpPassword"},
		"password, no username": {func(n *Notifications) { n.SMTPUsername = "" }, "notifications.smtpUsername"},
	} {
		c := Default()
		c.Notifications = valid
		tc.edit(&c.Notifications)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want+":")):
			t.Errorf("%s (%+v): %v, want an error naming %s", name, c.Notifications, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "s3cret-pass"):
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
	}
}
