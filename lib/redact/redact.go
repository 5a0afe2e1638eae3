// Package redact makes values safe to log. URLs carry secrets in their
// query (?token=…), userinfo (user:password@) and fragment; every log line
// and stored error message that names a URL names it through URL.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// URL returns raw without userinfo, query and fragment: scheme, host and
// path only. Text that does not parse as a URL is cut at the first '?' or
// '#' and before any '@' of its authority, so nothing after them reaches
// a log either.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		s := raw
		if i := strings.IndexAny(s, "?#"); i >= 0 {
			s = s[:i]
		}
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			scheme, rest, ok := strings.Cut(s, "://")
			if ok {
				if j := strings.LastIndexByte(rest, '@'); j >= 0 {
					return scheme + "://" + rest[j+1:]
				}
			}
			return s[i+1:]
		}
		return s
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// Error returns err's message with the URL of a *url.Error (what
// net/http's client returns, "Post \"https://…?token=…\": …") redacted.
func Error(err error) string {
	if err == nil {
		return ""
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + URL(ue.URL) + ": " + ue.Err.Error()
	}
	return err.Error()
}
