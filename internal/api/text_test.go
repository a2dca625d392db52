package api_test

import "testing"

// TestTextThatCannotBeStored: NUL bytes and invalid UTF-8 in a path, a
// query or a JSON body are refused with 400 on every database, never 500.
func TestTextThatCannotBeStored(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		root := e.user("root", true)
		e.org("acme", root)
		e.repo("acme/app", "private")
		e.want("root", "POST", "/api/v1/repository", `{"repository":"app2","namespace":"root","visibility":"private","description":"a\u0000b"}`, 400)
		e.want("root", "PUT", "/api/v1/repository/acme/app", `{"description":"x\u0000"}`, 400)
		e.want("root", "GET", "/api/v1/repository/acme/a%00pp", nil, 400)
		e.want("root", "GET", "/api/v1/repository/acme/app/tag/?specificTag=%ff%fe", nil, 400)
		e.want("root", "GET", "/api/v1/repository?namespace=%00", nil, 400)
		// A literal backslash-u text is fine.
		e.want("root", "PUT", "/api/v1/repository/acme/app", `{"description":"see \\u0000 in JSON"}`, 200)
	})
}
