"""A Ray cluster of two nodes on the loopback interface, started as docs/sweeps.md tells a user
to start one (``ray start --head``; a second ``ray start --address`` with its own temp dir and
ports; Ray >= 2.59's token authentication on), runs a sweep whose numbers equal the local
executor's bit for bit, its two cells on the two nodes. Without the token a driver gets one
line saying what to set."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

SPEC = """
name = "cluster"
preset = "quick"
seeds = [0, 1]

[set]
"train.epochs" = 30
"train.eval_every" = 10
"train.checkpoint_every" = 15

[grid]
"task.train_fraction" = [0.3, 0.5]
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, token, env) of a 2-node cluster, one CPU a node, stopped afterwards. HOME is
    the test's own, so the head's token file never touches the user's ~/.ray."""
    if not Path(_ray_cli()).is_file():
        pytest.skip("the ray command is not installed beside this Python")
    tmp = tmp_path_factory.mktemp("ray")
    port, node_port, object_port, lo = _free_ports(4)
    env = {**os.environ, "HOME": str(tmp / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_MODE", None), env.pop("RAY_AUTH_TOKEN", None), env.pop("RAY_ADDRESS", None)
    (tmp / "home").mkdir()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    ray_cli = _ray_cli()

    def run(*args, extra_env=None):
        return subprocess.run(
            [ray_cli, *args], env={**env, **(extra_env or {})}, capture_output=True, text=True,
            timeout=180, check=True,
        )  # fmt: skip

    address = f"127.0.0.1:{port}"
    try:
        # a head on a network interface turns token authentication on by itself; on the
        # loopback interface it has to be asked for, with a token generated first
        token = run("get-auth-token", "--generate").stdout.strip().splitlines()[-1]
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        run("start", "--head", f"--port={port}", f"--temp-dir={tmp / 'head'}",
            "--include-dashboard=false", *common, extra_env=auth)  # fmt: skip
        worker_ports = [f"--min-worker-port={lo + 1000}", f"--max-worker-port={lo + 1100}"]
        if lo + 1100 > 65535:
            worker_ports = ["--min-worker-port=20000", "--max-worker-port=20100"]
        run("start", f"--address={address}", f"--temp-dir={tmp / 'node2'}",
            f"--node-manager-port={node_port}", f"--object-manager-port={object_port}",
            *worker_ports, *common, extra_env=auth)  # fmt: skip
        yield address, token, env
    finally:
        _stop(tmp)
        shutil.rmtree(tmp / "head", ignore_errors=True)


def _stop(tmp: Path) -> None:
    """Stop this cluster's processes (those whose command line names its temp dirs) and their
    children; ``ray stop`` would stop every Ray process of the user, a cluster of theirs too."""
    import psutil

    ours = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(tmp) in part for part in proc.info["cmdline"] or []):
                ours += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
    for proc in ours:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(ours, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


def _wait_for_nodes(address: str, n: int, env: dict) -> None:
    """Until ``n`` nodes are alive, asked by a driver of its own (Ray reads the token from the
    environment of the process that connects)."""
    probe = (
        "import sys, time, ray; ray.init(address=sys.argv[1], log_to_driver=False)\n"
        "deadline = time.monotonic() + 60\n"
        "while sum(x['Alive'] for x in ray.nodes()) < int(sys.argv[2]):\n"
        "    assert time.monotonic() < deadline, 'the second node never joined'\n"
        "    time.sleep(1)\n"
    )
    subprocess.run([sys.executable, "-c", probe, address, str(n)], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip


def _sweep(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grokscope", "sweep", *args, "--quiet", "--threads", "1"],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _metrics(root: Path) -> dict[str, pd.DataFrame]:
    return {
        p.parent.name: pd.read_parquet(p).drop(columns=["wall_s"], errors="ignore")
        for p in sorted((root / "runs").glob("*/metrics.parquet"))
    }


def test_a_two_node_cluster_equals_the_local_executor(cluster, tmp_path):
    """The sweep as a user runs it on the cluster (``grokscope sweep --executor ray --address``
    with the token in the environment) against the local executor."""
    address, token, env = cluster
    auth = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    _wait_for_nodes(address, 2, auth)
    (tmp_path / "s.toml").write_text(SPEC)
    on_ray = _sweep(auth, str(tmp_path / "s.toml"), "--out", str(tmp_path / "ray"),
                    "--executor", "ray", "--address", address, "--workers", "2")  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr
    # two cells, one CPU a node: each node trained one cell
    assert "2 cells trained on 2 Ray node(s)" in on_ray.stdout
    local = _sweep(env, str(tmp_path / "s.toml"), "--out", str(tmp_path / "local"), "-w", "1")
    assert local.returncode == 0, local.stderr
    a, b = _metrics(tmp_path / "local" / "cluster"), _metrics(tmp_path / "ray" / "cluster")
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


def test_a_driver_without_the_token_is_told_what_to_set(cluster, tmp_path):
    address, _, env = cluster
    (tmp_path / "s.toml").write_text(SPEC)
    (tmp_path / "home").mkdir()
    no_token = {**env, "HOME": str(tmp_path / "home")}  # no token file there either
    out = _sweep(no_token, str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"),
                 "--executor", "ray", "--address", address)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: could not join the Ray cluster at {address}; the cluster asks for its token: "
        "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to what `ray get-auth-token` prints on the "
        "head"
    )
