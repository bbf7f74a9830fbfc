package dengine

import (
	"context"
	"encoding/base64"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// perRPCAuth sends one "authorization" metadata entry with every RPC
// (unary calls and watches alike); see docs/auth.md.
type perRPCAuth struct{ value string }

func (a perRPCAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": a.value}, nil
}

// RequireTransportSecurity is false so credentials also work on plaintext
// connections (trusted networks); use WithTLS elsewhere.
func (a perRPCAuth) RequireTransportSecurity() bool { return false }

// WithBasicAuth authenticates every RPC as user with password
// ("authorization: Basic base64(user:password)"). A server with auth
// enabled answers wrong credentials with ErrUnauthenticated and forbidden
// operations with ErrPermissionDenied.
func WithBasicAuth(user, password string) Option {
	return optionFunc(func(c *config) {
		if user == "" || strings.Contains(user, ":") {
			c.fail("WithBasicAuth: user must be non-empty and without ':', got %q", user)
			return
		}
		raw := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		c.auth = perRPCAuth{"Basic " + raw}
	})
}

// WithToken authenticates every RPC with a token
// ("authorization: Bearer <token>", see d-engine-server gen-token).
func WithToken(token string) Option {
	return optionFunc(func(c *config) {
		if token == "" || strings.ContainsAny(token, " \t\r\n") {
			c.fail("WithToken: token must be non-empty and without spaces")
			return
		}
		c.auth = perRPCAuth{"Bearer " + token}
	})
}

// authDialOption adds the configured credentials to a connection.
func (c *config) authDialOption() grpc.DialOption {
	if c.auth == nil {
		return grpc.EmptyDialOption{}
	}
	return grpc.WithPerRPCCredentials(c.auth)
}

var _ credentials.PerRPCCredentials = perRPCAuth{}
