//go:build linux

package dengine

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestHarnessSelfCheck runs the linearizability harness (real processes,
// SIGKILL / SIGSTOP / restart, history recording, porcupine) against
// internal/fakeserver, which needs no Rust build: a correct store must pass,
// and one that serves stale reads must be caught with a visualisation
// written. This keeps the harness itself tested while the real server is not
// available, and proves the check can fail. About 25 s; skipped with -short.
func TestHarnessSelfCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the harness self-check in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "fakeserver")
	build := exec.Command("go", "build", "-o", bin, "./internal/fakeserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building internal/fakeserver: %v\n%s", err, out)
	}

	t.Run("CorrectStorePasses", func(t *testing.T) {
		cl := startClusterWith(t, 3, bin, nil)
		cl.waitLeader(10 * time.Second)
		res, html := runLinearizability(t, cl, 10*time.Second, 4, 1)
		if res != porcupine.Ok {
			t.Fatalf("a linearizable store was judged %s (visualisation: %s)", res, html)
		}
	})
	t.Run("StaleReadsAreCaught", func(t *testing.T) {
		cl := startClusterWith(t, 3, bin, []string{"FAKE_DENGINE_STALE_READS=1"})
		cl.waitLeader(10 * time.Second)
		res, html := runLinearizability(t, cl, 6*time.Second, 4, 2)
		if res != porcupine.Illegal {
			t.Fatalf("stale reads went undetected: porcupine said %s", res)
		}
		st, err := os.Stat(html)
		if err != nil || st.Size() == 0 {
			t.Fatalf("visualisation %q not written: %v", html, err)
		}
		t.Logf("violation found as expected; visualisation at %s", html)
		_ = os.Remove(html)
	})
}
