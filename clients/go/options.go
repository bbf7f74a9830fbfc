package dengine

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Defaults used by NewClient.
const (
	DefaultPort           = "9083"
	DefaultDialTimeout    = 3 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultMaxAttempts    = 10
	DefaultBaseBackoff    = 50 * time.Millisecond
	DefaultMaxBackoff     = 2 * time.Second
)

// RetryPolicy bounds how the client retries retryable errors (see
// IsRetryable): at most MaxAttempts attempts per operation, sleeping
// min(MaxBackoff, BaseBackoff*2^n) with jitter (uniform in [d/2, d]) between
// attempts. Following a fresh NOT_LEADER hint happens without sleeping.
// The caller's context always bounds the whole operation.
type RetryPolicy struct {
	MaxAttempts int
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
}

type config struct {
	dialTimeout    time.Duration
	requestTimeout time.Duration
	retry          RetryPolicy
	tls            *tls.Config
	auth           credentials.PerRPCCredentials // WithBasicAuth / WithToken
	// dialOptions, unaryInts and streamInts come from WithDialOptions,
	// WithUnaryInterceptor and WithStreamInterceptor, in the order given.
	dialOptions []grpc.DialOption
	unaryInts   []grpc.UnaryClientInterceptor
	streamInts  []grpc.StreamClientInterceptor
	// onlyListed is WithRestrictToEndpoints.
	onlyListed bool
	// testDialOptions are extra dial options set by this package's tests
	// (e.g. an interceptor that loses answers); never set otherwise.
	testDialOptions []grpc.DialOption
	err             error
}

func defaultConfig() config {
	return config{
		dialTimeout:    DefaultDialTimeout,
		requestTimeout: DefaultRequestTimeout,
		retry: RetryPolicy{
			MaxAttempts: DefaultMaxAttempts,
			BaseBackoff: DefaultBaseBackoff,
			MaxBackoff:  DefaultMaxBackoff,
		},
	}
}

// Option configures NewClient.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

func (c *config) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("d-engine: "+format, args...)
	}
}

// WithDialTimeout bounds establishing a connection to one endpoint
// (default 3s). Must be > 0.
func WithDialTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.fail("WithDialTimeout: timeout must be > 0, got %v", d)
			return
		}
		c.dialTimeout = d
	})
}

// WithRequestTimeout bounds one attempt of an operation (one RPC to one node,
// default 5s); the caller's context bounds the whole operation including
// retries. Must be > 0.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.fail("WithRequestTimeout: timeout must be > 0, got %v", d)
			return
		}
		c.requestTimeout = d
	})
}

// WithRetryPolicy sets the retry policy (default 10 attempts, 50ms base,
// 2s max backoff). maxAttempts = 1 disables retries.
func WithRetryPolicy(maxAttempts int, baseBackoff, maxBackoff time.Duration) Option {
	return optionFunc(func(c *config) {
		switch {
		case maxAttempts < 1:
			c.fail("WithRetryPolicy: maxAttempts must be >= 1, got %d", maxAttempts)
		case baseBackoff < 0 || maxBackoff < 0:
			c.fail("WithRetryPolicy: backoffs must be >= 0, got base %v max %v", baseBackoff, maxBackoff)
		case maxBackoff < baseBackoff:
			c.fail("WithRetryPolicy: maxBackoff (%v) must be >= baseBackoff (%v)", maxBackoff, baseBackoff)
		default:
			c.retry = RetryPolicy{MaxAttempts: maxAttempts, BaseBackoff: baseBackoff, MaxBackoff: maxBackoff}
		}
	})
}

// WithTLS connects to every endpoint over TLS with cfg (cloned). Endpoints
// written as "https://host:port" use TLS even without this option (with the
// system roots).
func WithTLS(cfg *tls.Config) Option {
	return optionFunc(func(c *config) {
		if cfg == nil {
			c.fail("WithTLS: config must not be nil")
			return
		}
		c.tls = cfg.Clone()
	})
}

// WithTLSFiles connects over TLS, trusting the PEM CA bundle in caFile (the
// system roots if caFile is empty) and, for mutual TLS, presenting the
// client certificate certFile/keyFile (both empty for no client certificate).
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return optionFunc(func(c *config) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				c.fail("WithTLSFiles: reading CA file: %v", err)
				return
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				c.fail("WithTLSFiles: CA file %q holds no PEM certificate", caFile)
				return
			}
			cfg.RootCAs = pool
		}
		if (certFile == "") != (keyFile == "") {
			c.fail("WithTLSFiles: certFile and keyFile must be given together (got cert %q, key %q)", certFile, keyFile)
			return
		}
		if certFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				c.fail("WithTLSFiles: loading client certificate: %v", err)
				return
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		c.tls = cfg
	})
}

// Consistency orders a read against writes.
type Consistency int

const (
	// Linearizable (the default): the read sees every write acknowledged
	// before it started (ReadIndex on the leader).
	Linearizable Consistency = iota + 1
	// Lease: served by the leader under its lease; linearizable while clock
	// drift stays within the server's configured margin. Cheaper.
	Lease
	// Eventual: served from the contacted node's local state; may be stale.
	// The client spreads these reads over all endpoints.
	Eventual
)

func (c Consistency) String() string {
	switch c {
	case Linearizable:
		return "Linearizable"
	case Lease:
		return "Lease"
	case Eventual:
		return "Eventual"
	}
	return fmt.Sprintf("Consistency(%d)", int(c))
}

// ReadOption configures Get, GetMulti and ScanPrefix.
type ReadOption func(*readConfig)

// GetOption is an alias of ReadOption kept for readability at call sites.
type GetOption = ReadOption

type readConfig struct {
	consistency Consistency
}

// WithConsistency selects the read's consistency (default Linearizable).
func WithConsistency(c Consistency) ReadOption {
	return func(r *readConfig) { r.consistency = c }
}

// CASOption configures CompareAndSwap.
type CASOption func(*casConfig)

type casConfig struct{ ttl time.Duration }

// WithCASTTL gives the value stored by a successful CompareAndSwap a time to
// live (rounded up to whole milliseconds).
func WithCASTTL(ttl time.Duration) CASOption {
	return func(c *casConfig) { c.ttl = ttl }
}

// WithDialOptions adds gRPC dial options to every connection the client
// makes (a stats handler, window sizes, a custom dialer, a user agent).
// They are applied after the client's own settings (transport security,
// keepalive 10s/5s, connect backoff, the 256 MiB receive limit,
// credentials), so an option gRPC keeps one value of (e.g.
// grpc.WithKeepaliveParams) replaces the client's. Do not pass transport
// credentials here: use WithTLS / WithTLSFiles or an "https://" endpoint,
// which keep TLS for the addresses learned from leader hints too.
// Interceptors given with grpc.WithChainUnaryInterceptor compose with
// WithUnaryInterceptor's; grpc.WithUnaryInterceptor would be replaced by
// them, so prefer the client's options. May be given several times.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(c *config) {
		for i, o := range opts {
			if o == nil {
				c.fail("WithDialOptions: option %d is nil", i)
				return
			}
		}
		c.dialOptions = append(c.dialOptions, opts...)
	})
}

// WithUnaryInterceptor adds a unary client interceptor to every
// connection; it sees each attempt of each unary call (a retried call
// passes through it once per attempt, on the node tried). Chainable: each
// use adds one, and they run in the order given (the first is outermost).
// For OpenTelemetry, pass the interceptor of go.opentelemetry.io/contrib's
// otelgrpc, or better its stats handler through WithDialOptions
// (grpc.WithStatsHandler(otelgrpc.NewClientHandler())).
func WithUnaryInterceptor(i grpc.UnaryClientInterceptor) Option {
	return optionFunc(func(c *config) {
		if i == nil {
			c.fail("WithUnaryInterceptor: interceptor must not be nil")
			return
		}
		c.unaryInts = append(c.unaryInts, i)
	})
}

// WithStreamInterceptor adds a stream client interceptor to every
// connection (watches, lease keepalives, observe, snapshots); it sees each
// stream the client opens, including a watch re-opened after a break.
// Chainable like WithUnaryInterceptor.
func WithStreamInterceptor(i grpc.StreamClientInterceptor) Option {
	return optionFunc(func(c *config) {
		if i == nil {
			c.fail("WithStreamInterceptor: interceptor must not be nil")
			return
		}
		c.streamInts = append(c.streamInts, i)
	})
}

// WithRestrictToEndpoints makes the client connect only to the endpoints it
// was given. By default (without it) a leader hint — a NOT_LEADER answer or
// Leader() — naming another address is followed, so one endpoint is enough
// to reach the whole cluster. Use it when the nodes' advertised client
// addresses are not reachable from here (NAT, port forwarding, a proxy per
// node): a hint outside the list is then ignored, the client tries the
// listed endpoints in turn and remembers the one that serves as leader —
// so list every node. Addresses are compared after normalisation
// ("host:port"), as written: a host name and its IP are different.
func WithRestrictToEndpoints() Option {
	return optionFunc(func(c *config) { c.onlyListed = true })
}
