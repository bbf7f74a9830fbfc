package dengine

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// endpoint is one normalised server address.
type endpoint struct {
	// addr is "host:port" (IPv6 hosts in brackets).
	addr string
	// tls is true for "https://" endpoints.
	tls bool
}

// parseEndpoint accepts "host:port", "host" (port 9083), "[::1]:port",
// "http://host:port" and "https://host:port" (TLS). A trailing "/" is
// ignored; any other path, user info or query is rejected.
func parseEndpoint(s string) (endpoint, error) {
	raw := s
	s = strings.TrimSpace(s)
	var ep endpoint
	switch {
	case strings.HasPrefix(s, "https://"):
		ep.tls = true
		s = strings.TrimPrefix(s, "https://")
	case strings.HasPrefix(s, "http://"):
		s = strings.TrimPrefix(s, "http://")
	case strings.Contains(s, "://"):
		return ep, fmt.Errorf("d-engine: endpoint %q: unsupported scheme (use host:port, http:// or https://)", raw)
	}
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return ep, fmt.Errorf("d-engine: endpoint %q is empty (want host:port, e.g. 127.0.0.1:%s)", raw, DefaultPort)
	}
	if strings.ContainsAny(s, "/?#@ ") {
		return ep, fmt.Errorf("d-engine: endpoint %q: want host:port without path, query or user info", raw)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a bare host name, IPv4 address, or bracketed IPv6 address.
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			host = s[1 : len(s)-1]
		} else if !strings.Contains(s, ":") {
			host = s
		} else if net.ParseIP(s) != nil {
			host = s // bare IPv6 address
		} else {
			return ep, fmt.Errorf("d-engine: endpoint %q: %v", raw, err)
		}
		port = DefaultPort
	}
	if host == "" {
		return ep, fmt.Errorf("d-engine: endpoint %q: missing host", raw)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return ep, fmt.Errorf("d-engine: endpoint %q: port must be 1-65535, got %q", raw, port)
	}
	ep.addr = net.JoinHostPort(host, port)
	return ep, nil
}
