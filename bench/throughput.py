"""Throughput and latency over HTTP, driven by wrk from another process on 127.0.0.1:
a small ASGI app with and without `TallykeyMiddleware`, and `/auth/request` of
`tallykey serve`, each under uvicorn with one worker. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import build

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(command: list[str], env: dict[str, str], probe: str) -> Iterator[None]:
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(probe, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)


def wrk(url: str, token: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk (bounded: `seconds`, loopback only) and read its summary."""
    header = f"Authorization: Bearer {token}"
    subprocess.run(["wrk", "-t1", "-c8", "-d2s", "-H", header, url], capture_output=True,
                   check=True)  # warm-up
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", header, url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {}
    for label in ("50", "99"):
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        latency[label] = float(value) * _UNITS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": round(rps), "p50_ms": round(latency["50"], 3),
            "p99_ms": round(latency["99"], 3),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def uvicorn(app: str, port: int, factory: bool = False) -> list[str]:
    command = [str(BIN / "uvicorn"), app, "--port", str(port), "--workers", "1",
               "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
               "--http", "httptools"]
    return [*command, "--factory"] if factory else command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        settings, tokens = build(Path(tmp) / "store", 1000, 1000)
        env = {**os.environ, "TALLYKEY_DATA_DIR": str(settings.data_dir),
               "TALLYKEY_AUTH_FAIL_LIMIT": "0", "PYTHONPATH": str(ROOT / "bench")}
        token = tokens[0]
        result: dict[str, object] = {}
        for name, command_args in (("plain_app", ("apps:plain", False)),
                                   ("middleware_app", ("apps:protected", True))):
            port = free_port()
            with serving(uvicorn(command_args[0], port, command_args[1]), env,
                         f"http://127.0.0.1:{port}/"):
                result[name] = wrk(f"http://127.0.0.1:{port}/", token, args.seconds,
                                   args.connections)
        port = free_port()
        serve = [str(BIN / "tallykey"), "serve", "--port", str(port)]
        with serving(serve, env, f"http://127.0.0.1:{port}/healthz"):
            result["auth_request"] = wrk(
                f"http://127.0.0.1:{port}/auth/request?scope=employees:read", token,
                args.seconds, args.connections)
    plain = result["plain_app"]["rps"]  # type: ignore[index]
    protected = result["middleware_app"]["rps"]  # type: ignore[index]
    result["middleware_throughput_ratio"] = round(protected / plain, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
