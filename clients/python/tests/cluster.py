"""Real d-engine processes for the integration tests: free ports on
127.0.0.1, temporary data dirs, TOML configs (docs/config.md), and processes
that are always killed at teardown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent

# Fast elections keep failover tests short; still well above loopback RTTs.
RAFT_TOML = """
[raft]
tick_ms = 10
election_timeout_ms = 300
heartbeat_interval_ms = 50
lease_drift_margin_ms = 60
"""


def free_ports(n: int) -> List[int]:
    """``n`` distinct ports that were free a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def wait_until(what: str, fn: Callable[[], Optional[T]], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Polls ``fn`` until it returns a truthy value (exceptions count as
    "not yet"); fails the test after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@dataclass
class NodeSpec:
    id: int
    peer_port: int
    client_port: int
    data_dir: Path

    @property
    def peer_addr(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    @property
    def client_addr(self) -> str:
        return f"127.0.0.1:{self.client_port}"


def cluster_specs(root: Path, n: int = 3) -> List[NodeSpec]:
    ports = free_ports(2 * n)
    return [NodeSpec(i + 1, ports[2 * i], ports[2 * i + 1], root / f"node{i + 1}") for i in range(n)]


def write_config(spec: NodeSpec, specs: List[NodeSpec], path: Path, extra: str = RAFT_TOML) -> Path:
    lines = [
        f"node_id = {spec.id}",
        'cluster_id = "py-test"',
        f"data_dir = {json.dumps(str(spec.data_dir))}",
        f'peer_addr = "{spec.peer_addr}"',
        f'client_addr = "{spec.client_addr}"',
        "",
    ]
    for s in specs:
        lines += ["[[members]]", f"id = {s.id}", f'peer_addr = "{s.peer_addr}"', f'client_addr = "{s.client_addr}"', ""]
    path.write_text("\n".join(lines) + extra)
    return path


@dataclass
class Proc:
    spec: NodeSpec
    args: List[str]
    log_path: Path
    popen: Optional[subprocess.Popen] = None
    env: Dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class ServerCluster:
    """Three ``d-engine-server`` processes started with ``--config``."""

    def __init__(self, binary: str, root: Path, n: int = 3, extra_toml: str = ""):
        """``extra_toml``: more config sections (e.g. ``[watch]``) appended
        to every node's file after the fast-election ``[raft]`` section."""
        self.root = root
        self.specs = cluster_specs(root, n)
        self.procs: List[Proc] = []
        for s in self.specs:
            cfg = write_config(s, self.specs, root / f"node{s.id}.toml", RAFT_TOML + "\n" + extra_toml)
            self.procs.append(Proc(s, [binary, "--config", str(cfg)], root / f"node{s.id}.log"))

    @property
    def endpoints(self) -> List[str]:
        return [s.client_addr for s in self.specs]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def stop(self) -> None:
        for p in self.procs:
            p.kill(signal.SIGKILL)

    def proc(self, node_id: int) -> Proc:
        return self.procs[node_id - 1]

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.popen is not None and p.popen.poll() is not None]
        if dead:
            p = dead[0]
            raise AssertionError(
                f"d-engine-server node {p.spec.id} exited with code {p.popen.returncode}:\n{p.log_tail()}"
            )

    def logs(self) -> str:
        return "\n".join(f"--- node {p.spec.id} ---\n{p.log_tail()}" for p in self.procs)


def cargo_target_dir() -> Path:
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(json.loads(out.stdout)["target_directory"])


def cargo_binary(env_var: str, package: str, binary: str) -> str:
    """``$<env_var>``, else ``cargo build -p <package> --bin <binary>``.
    Raises RuntimeError (with the reason) if it cannot be had."""
    env_bin = os.environ.get(env_var)
    if env_bin:
        if not os.access(env_bin, os.X_OK):
            raise RuntimeError(f"{env_var}={env_bin} is not an executable file")
        return env_bin
    if shutil.which("cargo") is None:
        raise RuntimeError(f"cargo is not installed and {env_var} is not set")
    cmd = ["cargo", "build", "-p", package, "--bin", binary]
    build = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n" + build.stderr[-3000:])
    path = cargo_target_dir() / "debug" / binary
    if not path.exists():
        raise RuntimeError(f"{' '.join(cmd)} succeeded but {path} does not exist")
    return str(path)


def server_binary() -> str:
    """The ``d-engine-server`` executable (``$DENGINE_SERVER_BIN`` or built)."""
    return cargo_binary("DENGINE_SERVER_BIN", "d-engine-server", "d-engine-server")


def embedded_app_binary() -> str:
    """The Rust embedded test application of ``tests/src/bin/embedded_app.rs``
    (``$DENGINE_EMBEDDED_APP_BIN`` or built)."""
    return cargo_binary("DENGINE_EMBEDDED_APP_BIN", "d-engine-tests", "embedded-app")


class EmbeddedNodeProc(Proc):
    """A Python process running ``embedded_node.py`` (EmbeddedEngine.start_with),
    driven over stdin/stdout with one JSON request per line."""

    def start(self) -> None:
        self.stderr = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.PIPE,
            env={**os.environ, **self.env},
            start_new_session=True,
            text=True,
            bufsize=1,
        )

    def expect_started(self) -> None:
        """Reads the ``{"ready": id}`` line the process prints once its engine started."""
        assert self.popen is not None and self.popen.stdout is not None
        line = self.popen.stdout.readline()
        assert line, f"embedded node {self.spec.id} failed to start:\n{self.log_tail()}"
        assert json.loads(line)["ready"] == self.spec.id

    def wait_ready(self, timeout: float, reply_timeout: float) -> None:
        """``EmbeddedEngine.wait_ready(timeout)`` in the process; fails the test if it fails."""
        reply = self.request("wait_ready", reply_timeout=reply_timeout, timeout=timeout)
        assert "ok" in reply, f"node {self.spec.id}: {reply}\n{self.log_tail()}"

    def close(self) -> None:
        """Kills the process and closes its log."""
        self.kill()
        if getattr(self, "stderr", None):
            self.stderr.close()

    def request(self, op: str, reply_timeout: float = 20.0, **kw: object) -> dict:
        """Sends one request; returns the reply (``{"ok": ...}`` or ``{"error": ..., "type": ...}``)."""
        assert self.popen is not None and self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.popen.stdin.flush()
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(reply_timeout):
                raise AssertionError(
                    f"embedded node {self.spec.id}: no reply to {op} in {reply_timeout}s\n{self.log_tail()}"
                )
        finally:
            sel.close()
        line = self.popen.stdout.readline()
        if not line:
            raise AssertionError(f"embedded node {self.spec.id} exited:\n{self.log_tail()}")
        return json.loads(line)


def embedded_node(spec: NodeSpec, specs: List[NodeSpec], root: Path) -> EmbeddedNodeProc:
    cfg = write_config(spec, specs, root / f"emb{spec.id}.toml")
    args = [sys.executable, str(HERE / "embedded_node.py"), str(cfg)]
    return EmbeddedNodeProc(spec, args, root / f"emb{spec.id}.log")
