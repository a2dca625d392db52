package config

import (
	"net"
	"net/mail"
	"strconv"
)

// validate checks the email settings: with smtpAddr set, every email
// notification is sent through that relay from smtpFrom, so a relay
// address without a port or a sender that is not an address would fail
// every delivery of a server that started; such a setting stops it at
// start instead. The password is never in a message.
func (n Notifications) validate(bad func(field, format string, args ...any)) {
	if n.SMTPAddr == "" {
		return
	}
	if host, port, err := net.SplitHostPort(n.SMTPAddr); err != nil {
		bad("notifications.smtpAddr", "%q is not HOST:PORT (such as mail.example.com:587): %v", n.SMTPAddr, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		bad("notifications.smtpAddr", "%q: the port must be a number from 1 to 65535 (such as 587 or 25)", n.SMTPAddr)
	} else if host == "" {
		bad("notifications.smtpAddr", "%q has no host", n.SMTPAddr)
	}
	if n.SMTPFrom == "" {
		bad("notifications.smtpFrom", "must be set with notifications.smtpAddr: the sender of every email (berth@example.com or \"Berth <berth@example.com>\")")
	} else if _, err := mail.ParseAddress(n.SMTPFrom); err != nil {
		bad("notifications.smtpFrom", "%q is not an e-mail address (berth@example.com or \"Berth <berth@example.com>\"): %v", n.SMTPFrom, err)
	}
	if n.SMTPUsername != "" && n.SMTPPassword == "" {
		bad("notifications.smtpPassword", "must be set with notifications.smtpUsername (the relay's login)")
	}
	if n.SMTPPassword != "" && n.SMTPUsername == "" {
		bad("notifications.smtpUsername", "must be set with notifications.smtpPassword (the relay's login)")
	}
}
