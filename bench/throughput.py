"""Throughput, latency and server CPU per request over HTTP, side by side in one run.

wrk drives every server from another process on 127.0.0.1; all servers run at once
(idle ones cost nothing) and are measured in interleaved rounds, so a noisy neighbour
slows every variant alike; each figure is the median over the rounds. Server CPU per
request is the user + system time of the server's process tree during the measured wrk
run (from /proc), divided by the requests wrk completed: it does not depend on how much
of the machine the server got, which makes it the steadiest figure on a shared machine.

Variants: a bare ASGI app, the same app behind `TallykeyMiddleware`, `/auth/request` of
`tallykey serve` (uvicorn, and granian when installed), nginx `return 204` when nginx is
installed. `--baseline SRC` adds the middleware and `/auth/request` from another source
tree (e.g. `git archive <commit> src | tar -x -C /tmp/base`) for before/after figures.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import build

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NGINX = "/usr/sbin/nginx"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_TICK = os.sysconf("SC_CLK_TCK")
AUTH_REQUEST = "/auth/request?scope=employees:read"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants (live ones), from /proc."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


@dataclass
class Variant:
    name: str
    command: list[str]
    url: str
    probe: str
    env: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)
    pid: int = 0


@contextmanager
def serving(variant: Variant, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(variant.command, env={**env, **variant.env}, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    variant.pid = process.pid
    try:
        deadline = time.monotonic() + 120  # a loaded machine starts slowly
        while True:
            try:
                httpx.get(variant.probe, timeout=5)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError(f"{variant.name} exited: {variant.command}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{variant.name} did not start") from None
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(variant: Variant, token: str, seconds: float, connections: int) -> dict[str, float]:
    """One bounded wrk run (loopback only) with the server's CPU time around it."""
    before = cpu_seconds(variant.pid)
    ran = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-H",
         f"Authorization: Bearer {token}", variant.url],
        capture_output=True, text=True, check=False)
    if ran.returncode:
        raise RuntimeError(f"wrk failed on {variant.name}: {ran.stdout} {ran.stderr}")
    output = ran.stdout
    cpu = cpu_seconds(variant.pid) - before
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {}
    for label in ("50", "99"):
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        latency[label] = float(value) * _UNITS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"],
            "cpu_us": cpu / max(requests, 1) * 1e6,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def uvicorn(app: str, port: int, factory: bool = False) -> list[str]:
    command = [str(BIN / "uvicorn"), app, "--port", str(port), "--workers", "1",
               "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
               "--http", "httptools"]
    return [*command, "--factory"] if factory else command


def granian(app: str, port: int, factory: bool = False) -> list[str]:
    command = [str(BIN / "granian"), "--interface", "asgi", "--port", str(port),
               "--workers", "1", "--no-access-log", "--log-level", "warning",
               "--loop", "uvloop", app]
    return [*command, "--factory"] if factory else command


def nginx_config(directory: Path, port: int) -> list[str]:
    config = directory / "nginx.conf"
    config.write_text(
        f"daemon off; worker_processes 1; pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off;\n"
        f"  client_body_temp_path {directory}; proxy_temp_path {directory};\n"
        f"  fastcgi_temp_path {directory}; uwsgi_temp_path {directory};\n"
        f"  scgi_temp_path {directory};\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }} }}\n")
    return [NGINX, "-c", str(config), "-p", str(directory), "-e", str(directory / "e.log")]


def variants(tmp: Path, baseline: Path | None) -> list[Variant]:
    found: list[Variant] = []

    def add(name: str, command: list[str], path: str, port: int, probe: str = "/",
            env: dict[str, str] | None = None) -> None:
        base = f"http://127.0.0.1:{port}"
        found.append(Variant(name, command, base + path, base + probe, env or {}))

    port = free_port()
    add("bare_app", uvicorn("apps:plain", port), "/", port)
    port = free_port()
    add("middleware", uvicorn("apps:protected", port, factory=True), "/", port)
    port = free_port()
    add("auth_request", [str(BIN / "tallykey"), "serve", "--port", str(port)], AUTH_REQUEST,
        port, "/healthz")
    if importlib.util.find_spec("granian") is not None:
        port = free_port()
        add("bare_app_granian", granian("apps:plain", port), "/", port)
        port = free_port()
        add("auth_request_granian", [str(BIN / "tallykey"), "serve", "--port", str(port),
                                     "--server", "granian"], AUTH_REQUEST, port, "/healthz")
    if baseline is not None:
        env = {"PYTHONPATH": f"{baseline}:{ROOT / 'bench'}"}
        port = free_port()
        add("middleware_baseline", uvicorn("apps:protected", port, factory=True), "/", port,
            env=env)
        port = free_port()
        add("auth_request_baseline", [sys.executable, "-c", "from tallykey.cli import app; app()",
                                      "serve", "--port", str(port)], AUTH_REQUEST, port,
            "/healthz", env=env)
    if Path(NGINX).exists():
        port = free_port()
        directory = tmp / "nginx"
        directory.mkdir()
        add("nginx_204", nginx_config(directory, port), "/", port)
    return found


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us")
    result = {key: statistics.median(run[key] for run in runs) for key in keys}
    return {"rps": round(result["rps"]), "p50_ms": round(result["p50_ms"], 3),
            "p99_ms": round(result["p99_ms"], 3), "cpu_us": round(result["cpu_us"], 1),
            "non_2xx": int(sum(run["non_2xx"] for run in runs)), "rounds": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--baseline", type=Path, help="another tree's src/ to compare with")
    parser.add_argument("--only", help="comma-separated variant names")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        settings, tokens = build(Path(tmp) / "store", 1000, 1000)
        env = {**os.environ, "TALLYKEY_DATA_DIR": str(settings.data_dir),
               "TALLYKEY_AUTH_FAIL_LIMIT": "0", "PYTHONPATH": str(ROOT / "bench")}
        chosen = variants(Path(tmp), args.baseline.resolve() if args.baseline else None)
        if args.only:
            chosen = [v for v in chosen if v.name in args.only.split(",")]
        for variant in chosen:
            stack.enter_context(serving(variant, env))
        token = tokens[0]
        for variant in chosen:  # warm-up: caches filled, code paths hot
            wrk(variant, token, 1, 8)
        for _ in range(args.rounds):
            for variant in chosen:
                variant.runs.append(wrk(variant, token, args.seconds, args.connections))
    result: dict[str, object] = {"connections": args.connections, "seconds": args.seconds,
                                 "rounds": args.rounds}
    for variant in chosen:
        result[variant.name] = median_of(variant.runs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
