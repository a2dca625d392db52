package api

import (
	"net/http/httptest"
	"testing"
)

// TestTrustedOriginBehindAProxy: a browser that sends an Origin but no
// Sec-Fetch-Site is judged by its Origin against the request's Host; a
// reverse proxy that hands the API another Host (nginx's default
// proxy_set_header Host $proxy_host) made every write from the registry's
// own pages a 403. The registry's public origin (externalURL) is trusted;
// another stays refused.
func TestTrustedOriginBehindAProxy(t *testing.T) {
	a := New(Stores{}, nil, Options{TrustedOrigin: "https://registry.example.com"})
	for origin, ok := range map[string]bool{"https://registry.example.com": true, "https://evil.example": false} {
		r := httptest.NewRequest("POST", "http://10.0.0.5:5000/api/v1/repository/acme/app/changevisibility", nil)
		r.Header.Set("Origin", origin)
		if err := a.crossOrigin.Check(r); (err == nil) != ok {
			t.Errorf("Origin %s behind a proxy: %v, want allowed %v", origin, err, ok)
		}
	}
}

// TestJSONContentTypes: the Content-Types a JSON body may come as; a bad
// parameter does not hide the type it names.
func TestJSONContentTypes(t *testing.T) {
	for ct, ok := range map[string]bool{
		"": true, "application/json": true, "application/json; charset=utf-8": true, "application/json; foo": true,
		"application/merge-patch+json": true, "application/x-www-form-urlencoded": true,
		"text/plain": false, "text/plain; charset=UTF-8": false, "multipart/form-data; boundary=x": false, "garbage/": false,
	} {
		if got := jsonContent(ct); got != ok {
			t.Errorf("jsonContent(%q) = %v, want %v", ct, got, ok)
		}
	}
}
