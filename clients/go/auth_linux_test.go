//go:build linux

package dengine

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// serverTool runs `bin args...` with stdin and returns its stdout.
func serverTool(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return string(out)
}

func toolField(t *testing.T, text, name string) string {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in %q", name, text)
	return ""
}

// TestAuth: a 3-node cluster with [auth] enabled; a reader of app/ reads
// but cannot write (ErrPermissionDenied), wrong or missing credentials get
// ErrUnauthenticated, and a token with the admin role writes anywhere.
func TestAuth(t *testing.T) {
	bin := serverBin(t)
	hash := strings.TrimSpace(serverTool(t, bin, "rpw\n", "hash-password"))
	tok := serverTool(t, bin, "", "gen-token")
	token, digest := toolField(t, tok, "token"), toolField(t, tok, "sha256")
	extra := fmt.Sprintf(`
[auth]
enabled = true

[[auth.roles]]
name = "app-reader"
grants = [{ prefix = "app/", access = "read" }]

[[auth.users]]
name = "reader"
password_hash = %q
roles = ["app-reader"]

[[auth.users]]
name = "root"
tokens = [%q]
roles = ["admin"]
`, hash, digest)
	cl := startClusterExtra(t, 3, bin, nil, extra)

	root := cl.client(WithToken(token), WithRequestTimeout(2*time.Second), WithRetryPolicy(12, 50*time.Millisecond, time.Second))
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := root.Put(ctx, []byte("app/a"), []byte("1"))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin put never succeeded: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	ctx := opCtx(t, 30*time.Second)
	reader := cl.client(WithBasicAuth("reader", "rpw"))
	kv, err := reader.Get(ctx, []byte("app/a"))
	if err != nil || kv == nil || string(kv.Value) != "1" {
		t.Fatalf("reader get: %v %v", kv, err)
	}
	if _, err := reader.Put(ctx, []byte("app/a"), []byte("2")); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("reader put: want ErrPermissionDenied, got %v", err)
	} else if !strings.Contains(err.Error(), `user "reader" lacks readwrite access to key "app/a"`) {
		t.Fatalf("message: %v", err)
	}
	if _, err := reader.Get(ctx, []byte("other/x")); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("reader get other/: want ErrPermissionDenied, got %v", err)
	}
	if _, err := reader.ScanPrefix(ctx, []byte("app"), 0); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("reader wide scan: want ErrPermissionDenied, got %v", err)
	}
	if _, err := root.Put(ctx, []byte("other/x"), []byte("1")); err != nil {
		t.Fatalf("admin put other/: %v", err)
	}

	for name, opt := range map[string]Option{
		"wrong password": WithBasicAuth("reader", "nope"),
		"bad token":      WithToken("nope"),
		"none":           nil,
	} {
		c := cl.client(opt, WithRetryPolicy(2, 10*time.Millisecond, 20*time.Millisecond))
		if _, err := c.Get(ctx, []byte("app/a")); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("%s: want ErrUnauthenticated, got %v", name, err)
		}
	}
}

func TestAuthOptionsValidate(t *testing.T) {
	for _, o := range []Option{WithBasicAuth("", "x"), WithBasicAuth("a:b", "x"), WithToken(""), WithToken("a b")} {
		if _, err := NewClientWithOptions([]string{"127.0.0.1:1"}, o); err == nil {
			t.Fatal("expected an option error")
		}
	}
}
