package dengine

import (
	"errors"
	"strings"
	"testing"
	"time"

	enginev1 "github.com/d-engine/d-engine/clients/go/proto/dengine/v1"
)

func enginev1ErrorCodeValues() map[string]int32 { return enginev1.ErrorCode_value }

func TestParseEndpoint(t *testing.T) {
	cases := []struct {
		in   string
		addr string
		tls  bool
	}{
		{"127.0.0.1:9083", "127.0.0.1:9083", false},
		{"127.0.0.1", "127.0.0.1:9083", false},
		{"localhost", "localhost:9083", false},
		{" node-1.example:7000 ", "node-1.example:7000", false},
		{"http://127.0.0.1:9083", "127.0.0.1:9083", false},
		{"http://127.0.0.1:9083/", "127.0.0.1:9083", false},
		{"https://db.example:443", "db.example:443", true},
		{"https://db.example", "db.example:9083", true},
		{"[::1]:9083", "[::1]:9083", false},
		{"[::1]", "[::1]:9083", false},
		{"::1", "[::1]:9083", false},
	}
	for _, tc := range cases {
		ep, err := parseEndpoint(tc.in)
		if err != nil {
			t.Errorf("parseEndpoint(%q): %v", tc.in, err)
			continue
		}
		if ep.addr != tc.addr || ep.tls != tc.tls {
			t.Errorf("parseEndpoint(%q) = %+v, want %s tls=%v", tc.in, ep, tc.addr, tc.tls)
		}
	}
	bad := map[string]string{
		"":                     "empty",
		"   ":                  "empty",
		"grpc://h:1":           "scheme",
		"h:0":                  "port",
		"h:65536":              "port",
		"h:http":               "port",
		"http://h:1/path":      "path",
		"http://user@h:1":      "user",
		":9083":                "host",
		"h:1:2":                "h:1:2",
		"http://h:1?x=y":       "query",
		"https://":             "empty",
		"localhost:-1":         "port",
		"127.0.0.1:9083/v1/kv": "path",
	}
	for in, want := range bad {
		_, err := parseEndpoint(in)
		if err == nil {
			t.Errorf("parseEndpoint(%q) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("parseEndpoint(%q) error %q does not mention %q", in, err, want)
		}
	}
}

func TestNewClientValidation(t *testing.T) {
	if _, err := NewClient(); err == nil || !strings.Contains(err.Error(), "at least one endpoint") {
		t.Fatalf("no endpoints: %v", err)
	}
	if _, err := NewClient("ok:1", "grpc://x"); err == nil {
		t.Fatal("bad endpoint accepted")
	}
	badOpts := map[string]Option{
		"WithDialTimeout":    WithDialTimeout(0),
		"WithRequestTimeout": WithRequestTimeout(-time.Second),
		"maxAttempts":        WithRetryPolicy(0, time.Millisecond, time.Second),
		"maxBackoff":         WithRetryPolicy(3, time.Second, time.Millisecond),
		"WithTLS":            WithTLS(nil),
		"CA file":            WithTLSFiles("/nonexistent/ca.pem", "", ""),
		"together":           WithTLSFiles("", "cert.pem", ""),
	}
	for want, o := range badOpts {
		_, err := NewClientWithOptions([]string{"127.0.0.1:1"}, o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("option %s: got %v", want, err)
		}
	}
	c, err := NewClient("127.0.0.1:1", "http://127.0.0.1:1", "127.0.0.1:2")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Endpoints(); len(got) != 2 || got[0] != "127.0.0.1:1" || got[1] != "127.0.0.1:2" {
		t.Fatalf("endpoints not normalised and deduplicated: %v", got)
	}
}

func TestBackoffDelayBounds(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 10, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	for n := 0; n < 12; n++ {
		want := p.BaseBackoff << n
		if want > p.MaxBackoff || want <= 0 {
			want = p.MaxBackoff
		}
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			d := backoffDelay(p, n)
			if d < want/2 || d > want {
				t.Fatalf("backoffDelay(n=%d) = %v, want in [%v, %v]", n, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("backoffDelay(n=%d) has no jitter: %d distinct values in 200", n, len(seen))
		}
	}
	// Huge n must not overflow into a negative or zero delay.
	if d := backoffDelay(p, 1000); d < p.MaxBackoff/2 || d > p.MaxBackoff {
		t.Fatalf("backoffDelay(1000) = %v", d)
	}
	if d := backoffDelay(RetryPolicy{}, 3); d != 0 {
		t.Fatalf("zero policy gave %v", d)
	}
}

func TestTTLMillisRoundsUp(t *testing.T) {
	cases := map[time.Duration]uint64{
		time.Nanosecond:         1,
		time.Millisecond:        1,
		time.Millisecond + 1:    2,
		1500 * time.Microsecond: 2,
		time.Second:             1000,
		0:                       0,
		-time.Second:            0,
	}
	for in, want := range cases {
		if got := ttlMillis(in); got != want {
			t.Errorf("ttlMillis(%v) = %d, want %d", in, got, want)
		}
	}
}

func TestConsistencyValidation(t *testing.T) {
	_, err := readOpts([]ReadOption{WithConsistency(Consistency(42))})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown consistency: %v", err)
	}
	rc, err := readOpts(nil)
	if err != nil || rc.consistency != Linearizable || rc.route() != routeLeader {
		t.Fatalf("default read config %+v %v", rc, err)
	}
	rc, _ = readOpts([]ReadOption{WithConsistency(Eventual)})
	if rc.route() != routeAny || rc.proto() != enginev1.Consistency_EVENTUAL {
		t.Fatalf("eventual read config %+v", rc)
	}
}
