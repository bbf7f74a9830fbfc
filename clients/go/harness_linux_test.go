//go:build linux

package dengine

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ServerBinEnv names the d-engine-server binary the cluster tests run.
const ServerBinEnv = "DENGINE_SERVER_BIN"

// serverBin returns the server binary or skips the test.
func serverBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(ServerBinEnv)
	if bin == "" {
		t.Skipf("skipping: %s is not set; build the server (cargo build -p d-engine-server) and run "+
			"%s=$PWD/target/debug/d-engine-server go test ./... to run the 3-node cluster tests", ServerBinEnv, ServerBinEnv)
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("%s=%q is not an executable file (%v)", ServerBinEnv, bin, err)
	}
	return bin
}

// testNode is one d-engine-server process.
type testNode struct {
	id         uint64
	clientAddr string
	peerAddr   string
	dataDir    string
	configPath string
	logPath    string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	paused bool
}

// testCluster runs n server processes on free 127.0.0.1 ports, each with its
// own data dir and config file under one temp dir. Every process is killed
// when the test ends (and, through Pdeathsig, if the test binary dies).
type testCluster struct {
	t     *testing.T
	bin   string
	env   []string // extra environment of every server process
	dir   string
	nodes []*testNode
}

// freePorts reserves n distinct free ports on 127.0.0.1 (all held open
// together so they differ, then released for the servers to bind).
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserving a port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return out
}

// startCluster starts n nodes of $DENGINE_SERVER_BIN (skips if unset).
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, serverBin(t), nil)
}

// startClusterWith starts n nodes of bin, each run as `bin --config FILE`
// with a generated d-engine.toml (node_id, cluster_id, data_dir, peer_addr,
// client_addr and the [[members]] of a brand-new cluster).
func startClusterWith(t *testing.T, n int, bin string, env []string) *testCluster {
	t.Helper()
	return startClusterExtra(t, n, bin, env, "")
}

// startClusterExtra is startClusterWith with extra TOML (e.g. an [auth]
// section) appended to every node's config file.
func startClusterExtra(t *testing.T, n int, bin string, env []string, extraTOML string) *testCluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "dengine-go-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, bin: bin, env: env, dir: dir}
	addrs := freePorts(t, 2*n)
	for i := 0; i < n; i++ {
		nd := &testNode{
			id:         uint64(i + 1),
			peerAddr:   addrs[2*i],
			clientAddr: addrs[2*i+1],
			dataDir:    filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			configPath: filepath.Join(dir, fmt.Sprintf("node%d.toml", i+1)),
			logPath:    filepath.Join(dir, fmt.Sprintf("node%d.log", i+1)),
		}
		c.nodes = append(c.nodes, nd)
	}
	clusterID := fmt.Sprintf("go-test-%d", time.Now().UnixNano())
	for _, nd := range c.nodes {
		var b strings.Builder
		fmt.Fprintf(&b, "node_id = %d\ncluster_id = %q\ndata_dir = %q\npeer_addr = %q\nclient_addr = %q\n\n",
			nd.id, clusterID, nd.dataDir, nd.peerAddr, nd.clientAddr)
		for _, m := range c.nodes {
			fmt.Fprintf(&b, "[[members]]\nid = %d\npeer_addr = %q\nclient_addr = %q\n\n", m.id, m.peerAddr, m.clientAddr)
		}
		b.WriteString(extraTOML)
		if err := os.WriteFile(nd.configPath, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.shutdown)
	for i := range c.nodes {
		c.start(i)
	}
	return c
}

// start launches node i (again, after a kill) with its config.
func (c *testCluster) start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		select {
		case <-nd.done:
		default:
			c.t.Fatalf("node %d is already running", nd.id)
		}
	}
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "\n=== %s: starting node %d ===\n", time.Now().Format(time.RFC3339Nano), nd.id)
	cmd := exec.Command(c.bin, "--config", nd.configPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(append(os.Environ(), "RUST_BACKTRACE=1"), c.env...)
	if os.Getenv("RUST_LOG") == "" {
		cmd.Env = append(cmd.Env, "RUST_LOG=info")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // signals reach only this server
		Pdeathsig: syscall.SIGKILL, // never outlive the test binary
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		c.t.Fatalf("starting %s for node %d: %v", c.bin, nd.id, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	nd.cmd, nd.done, nd.paused = cmd, done, false
}

// running reports whether node i's process is alive (paused counts).
func (c *testCluster) running(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// kill SIGKILLs node i and waits for it to exit.
func (c *testCluster) kill(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.paused = false
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("node %d did not exit within 10s of SIGKILL", nd.id)
	}
}

// pause SIGSTOPs node i; resume SIGCONTs it.
func (c *testCluster) pause(i int) { c.signal(i, syscall.SIGSTOP, true) }

func (c *testCluster) resume(i int) { c.signal(i, syscall.SIGCONT, false) }

func (c *testCluster) signal(i int, sig syscall.Signal, paused bool) {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return
	}
	select {
	case <-nd.done:
		return
	default:
	}
	if err := nd.cmd.Process.Signal(sig); err == nil {
		nd.paused = paused
	}
}

func (c *testCluster) isPaused(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.paused
}

// shutdown kills every process; on failure it prints the logs' tails and
// keeps the directory.
func (c *testCluster) shutdown() {
	for i := range c.nodes {
		c.resume(i)
		nd := c.nodes[i]
		nd.mu.Lock()
		cmd, done := nd.cmd, nd.done
		nd.mu.Unlock()
		if cmd != nil {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	if c.t.Failed() {
		for _, nd := range c.nodes {
			c.t.Logf("---- last lines of %s ----\n%s", nd.logPath, tailFile(nd.logPath, 40))
		}
		c.t.Logf("cluster data dirs and logs kept in %s", c.dir)
		return
	}
	_ = os.RemoveAll(c.dir)
}

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func (c *testCluster) endpoints() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.clientAddr)
	}
	return out
}

// client returns a client for every node, closed at the end of the test.
func (c *testCluster) client(opts ...Option) *Client {
	c.t.Helper()
	cl, err := NewClientWithOptions(c.endpoints(), opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// waitLeader waits (bounded by timeout) until the cluster has a leader that
// accepts a write, and returns the leader's node index.
func (c *testCluster) waitLeader(timeout time.Duration) int {
	c.t.Helper()
	cl, err := NewClientWithOptions(c.endpoints(), WithRequestTimeout(time.Second),
		WithDialTimeout(time.Second), WithRetryPolicy(3, 50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		li, err := cl.Leader(ctx)
		if err == nil {
			_, err = cl.Put(ctx, []byte("__go_test_ready"), []byte("1"))
		}
		cancel()
		if err == nil {
			for i, nd := range c.nodes {
				if nd.id == li.ID {
					return i
				}
			}
			last = fmt.Errorf("leader id %d is not a member", li.ID)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no working leader within %v: %v", timeout, last)
	return -1
}

// leaderIndex asks the cluster who leads now (-1 if unknown).
func (c *testCluster) leaderIndex(ctx context.Context, cl *Client) int {
	li, err := cl.Leader(ctx)
	if err != nil {
		return -1
	}
	for i, nd := range c.nodes {
		if nd.id == li.ID {
			return i
		}
	}
	return -1
}
