//go:build linux

package dengine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// makeCerts runs `d-engine-server certs` into dir (node 1, client "app").
func makeCerts(t *testing.T, bin, dir string) string {
	t.Helper()
	out, err := exec.Command(bin, "certs", "--out", dir, "--nodes", "1", "--clients", "app").CombinedOutput()
	if err != nil {
		t.Fatalf("d-engine-server certs: %v\n%s", err, out)
	}
	return dir
}

// startTLSNode starts one node whose client and peer ports use TLS with
// the certificates in certs; clientAuth is the [tls] client_auth value.
func startTLSNode(t *testing.T, clientAuth string) (*testCluster, string) {
	t.Helper()
	bin := serverBin(t)
	dir := t.TempDir()
	certs := makeCerts(t, bin, filepath.Join(dir, "certs"))
	addrs := freePorts(t, 2)
	nd := &testNode{
		id:         1,
		peerAddr:   addrs[0],
		clientAddr: addrs[1],
		dataDir:    filepath.Join(dir, "node1"),
		configPath: filepath.Join(dir, "node1.toml"),
		logPath:    filepath.Join(dir, "node1.log"),
	}
	cfg := fmt.Sprintf("node_id = 1\ncluster_id = \"go-tls\"\ndata_dir = %q\npeer_addr = %q\nclient_addr = %q\n\n"+
		"[tls]\ncert_file = %q\nkey_file = %q\nca_file = %q\nclient_api = true\npeer = true\nclient_auth = %q\n",
		nd.dataDir, nd.peerAddr, nd.clientAddr,
		filepath.Join(certs, "node-1.pem"), filepath.Join(certs, "node-1-key.pem"), filepath.Join(certs, "ca.pem"), clientAuth)
	if err := os.WriteFile(nd.configPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, bin: bin, dir: dir, nodes: []*testNode{nd}}
	t.Cleanup(c.shutdown)
	c.start(0)
	return c, certs
}

// tlsPut makes one put through a fresh client with opts; it fails fast.
func tlsPut(c *testCluster, opts ...Option) error {
	opts = append([]Option{WithRequestTimeout(time.Second), WithDialTimeout(time.Second),
		WithRetryPolicy(2, 50*time.Millisecond, 100*time.Millisecond)}, opts...)
	cl, err := NewClientWithOptions(c.endpoints(), opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_, err = cl.Put(ctx, []byte("tls-probe"), []byte("x"))
	return err
}

// waitTLS waits until a put with opts succeeds.
func waitTLS(t *testing.T, c *testCluster, opts ...Option) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = tlsPut(c, opts...); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("TLS node never accepted a write: %v", err)
}

func TestTLSClientWithClusterCA(t *testing.T) {
	c, certs := startTLSNode(t, "none")
	withCA := WithTLSFiles(filepath.Join(certs, "ca.pem"), "", "")
	waitTLS(t, c, withCA)

	cl := c.client(withCA, WithRequestTimeout(2*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Put(ctx, []byte("go-tls"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	kv, err := cl.Get(ctx, []byte("go-tls"))
	if err != nil || kv == nil || string(kv.Value) != "v" {
		t.Fatalf("get over TLS: %v %v", kv, err)
	}

	if err := tlsPut(c); err == nil {
		t.Fatal("a plaintext client was served by a TLS port")
	}
	other := makeCerts(t, c.bin, filepath.Join(c.dir, "other-ca"))
	if err := tlsPut(c, WithTLSFiles(filepath.Join(other, "ca.pem"), "", "")); err == nil {
		t.Fatal("a client trusting another CA was served")
	}
}

func TestMTLSRequiresClientCertificate(t *testing.T) {
	c, certs := startTLSNode(t, "require")
	ca := filepath.Join(certs, "ca.pem")
	withCert := WithTLSFiles(ca, filepath.Join(certs, "client-app.pem"), filepath.Join(certs, "client-app-key.pem"))
	waitTLS(t, c, withCert)
	if err := tlsPut(c, WithTLSFiles(ca, "", "")); err == nil {
		t.Fatal("mTLS without a client certificate was served")
	}
	if err := tlsPut(c, withCert); err != nil {
		t.Fatalf("mTLS with the client certificate: %v", err)
	}
}
