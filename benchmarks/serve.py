"""Explorer speed: slice latency under 8 concurrent clients, and start-up on 32,735 rows.

Slices: the server runs in its own process on 127.0.0.1; 8 client threads send 2,000
``/api/slice/{name}?window=lung`` requests (bounded by ``--time-limit`` seconds) over the
slices of one series; every answer must be a 200 PNG. Printed: p50/p95/max latency with
the slice cache off (every request reads and decodes the PNG) and on (the default), and
from a training store (npy and zarr, cache off); the server's CPU time; and side by side
the same work done in-process without HTTP (read, window, encode: min and median per
slice) as the baseline.

Start-up: ``deeplesion serve`` on the real val CSV tiled to 32,735 rows, from process start
until /api/meta answers, against a process that only imports the package and loads the
table (min and median of ``--repeat`` runs).

Usage: ``PYTHONPATH=src python benchmarks/serve.py [--requests 2000] [--clients 8]``
(real slices from $DEEPLESION_REAL_DATA, else the synthetic sample).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("DEEPLESION_REAL_DATA", REPO.parent / "shared/data/deeplesion-real"))
SERIES = REAL / "aholovenko__sa-21-deep-lesion" / "data" / "000062_01_01"
VAL_CSV = REAL / "fsafe__Capstone" / "annotation_info" / "DL_info_val.csv"
ENV = dict(os.environ, PYTHONPATH=str(REPO / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_up(url: str, proc: subprocess.Popen, limit_s: float = 60) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            time.sleep(0.01)
    raise SystemExit(f"no answer from {url} within {limit_s} s")


# ----------------------------------------------------------------------------- server mode


def serve_only(root: str, csv_path: str, port: int, cache: int, store: str | None) -> None:
    from deeplesion.data.store import open_store
    from deeplesion.explorer.images import SliceReader
    from deeplesion.explorer.server import open_explorer, run

    explorer = open_explorer(root, csv_path=csv_path)
    source = open_store(store) if store else None
    explorer.reader = SliceReader(root, source, cache_slices=cache)
    run(explorer.app(), "127.0.0.1", port)


# ----------------------------------------------------------------------------- data


def make_root(tmp: Path) -> tuple[Path, Path, list[str]]:
    """A root of 512 x 512 slices and an annotation file; the slice names to request.

    The real series has no DL_info row here, so the annotation file holds one made-up row
    (the sample's first lesion moved to that folder, Slice_range 56-84) for the store to
    know the series; the slices themselves are real.
    """
    from dataclasses import replace

    from deeplesion.data.annotations import load_lesions, write_dl_info
    from deeplesion.data.sample import write_sample

    sample = write_sample(tmp / "sample", seed=0)
    if not SERIES.is_dir():
        folder = sample / "Images_png" / "000001_01_01"
        names = [f"000001_01_01_{p.stem}.png" for p in sorted(folder.glob("*.png"))]
        return sample, sample / "DL_info.csv", names
    root = tmp / "root"
    root.mkdir()
    (root / "Images_png").symlink_to(SERIES.parent)
    first = load_lesions(sample / "DL_info.csv").lesions[0]
    row = replace(
        first,
        file_name="000062_01_01_070.png",
        patient_index=62,
        study_index=1,
        series_id=1,
        key_slice_index=70,
        slice_range=(56, 84),
    )
    csv_path = tmp / "series.csv"
    write_dl_info([row], csv_path)
    names = [f"000062_01_01_{p.stem}.png" for p in sorted(SERIES.glob("*.png"))]
    return root, csv_path, names


# ----------------------------------------------------------------------------- measurements


def in_process(root: Path, names: list[str], repeat: int) -> list[float]:
    """Per-slice seconds of read + window + encode without HTTP (the baseline)."""
    from deeplesion.data.windowing import parse_window
    from deeplesion.explorer.images import SliceReader, check_name, window_image

    reader = SliceReader(root, cache_slices=0)
    window = parse_window("lung")
    times = []
    for _ in range(repeat):
        for name in names:
            t = time.perf_counter()
            window_image(reader.read_hu(check_name(name)), window, [], False)
            times.append(time.perf_counter() - t)
    return times


def hammer(base: str, names: list[str], requests: int, clients: int, limit_s: float):
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + limit_s
    per_client = requests // clients

    def client(k: int) -> None:
        with httpx.Client(timeout=30) as http:
            for i in range(per_client):
                if time.perf_counter() > deadline:
                    return
                name = names[(k * 7 + i) % len(names)]
                t = time.perf_counter()
                r = http.get(f"{base}api/slice/{name}?window=lung")
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    if r.status_code != 200 or r.headers["content-type"] != "image/png":
                        errors.append(f"{name}: {r.status_code}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - wall


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def slice_benchmark(args, root: Path, csv_path: Path, names: list[str]) -> None:
    base_times = in_process(root, names, args.repeat)
    base_p50 = statistics.median(base_times)
    print(
        f"baseline in-process read+window+encode: min {min(base_times) * 1e3:.1f} ms, "
        f"median {base_p50 * 1e3:.1f} ms per slice ({len(names)} slices x {args.repeat})"
    )
    from deeplesion.convert.store import build_store

    configs = [("PNG, cache off", 0, None), ("PNG, cache 24", 24, None)]
    for fmt in ("npy", "zarr"):
        out = root.parent / f"store-{fmt}"
        build_store(root, out, csv_path=csv_path, fmt=fmt)
        configs.append((f"store {fmt}, cache off", 0, out))
    for label, cache, store in configs:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-only", str(root), str(csv_path), str(port)]
            + ["--cache", str(cache)]
            + (["--store", str(store)] if store else []),
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}/"
            wait_until_up(base + "api/meta", proc)
            cpu0, clock0 = cpu_seconds(proc.pid), time.process_time()
            lat, errors, wall = hammer(base, names, args.requests, args.clients, args.time_limit)
            cpu = cpu_seconds(proc.pid) - cpu0
            client_cpu = time.process_time() - clock0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        p50, p95 = pct(lat, 50), pct(lat, 95)
        print(
            f"{label}: {len(lat)} requests, {args.clients} clients, {len(errors)} errors, "
            f"wall {wall:.1f} s ({len(lat) / wall:.0f}/s); latency p50 {p50 * 1e3:.1f} ms, "
            f"p95 {p95 * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms; p50 / baseline median "
            f"{p50 / base_p50:.1f}x; CPU server {cpu:.1f} s, clients {client_cpu:.1f} s"
        )
        for e in errors[:5]:
            print("  error:", e)


def startup_benchmark(args, tmp: Path) -> None:
    if not VAL_CSV.is_file():
        print("start-up: real val CSV not found, skipped")
        return
    with open(VAL_CSV, newline="") as fh:
        rows = list(csv.reader(fh))
    tiled = tmp / "tiled.csv"
    with open(tiled, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(rows[0])
        for i in range(32735):
            w.writerow(rows[1 + i % (len(rows) - 1)])
    empty = tmp / "startup-root"
    empty.mkdir()
    serve_s, load_s = [], []
    for _ in range(args.repeat):
        port = free_port()
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "deeplesion", "serve", str(empty), "--csv", str(tiled)]
            + ["--port", str(port)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/api/meta", proc)
            serve_s.append(time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        t = time.perf_counter()
        code = f"from deeplesion.data.annotations import load_lesions; load_lesions({str(tiled)!r})"
        subprocess.run([sys.executable, "-c", code], env=ENV, check=True)
        load_s.append(time.perf_counter() - t)
    print(
        f"start-up on 32,735 rows until /api/meta answers: min {min(serve_s):.2f} s, median "
        f"{statistics.median(serve_s):.2f} s; python + load_lesions alone: min "
        f"{min(load_s):.2f} s, median {statistics.median(load_s):.2f} s; ratio "
        f"{statistics.median(serve_s) / statistics.median(load_s):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve-only", nargs=3, metavar=("ROOT", "CSV", "PORT"))
    parser.add_argument("--cache", type=int, default=24)
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    if args.serve_only:
        root, csv_path, port = args.serve_only
        serve_only(root, csv_path, int(port), args.cache, args.store)
        return
    if not 1 <= args.requests <= 2000 or not 1 <= args.clients <= 8:
        parser.error("at most 2,000 requests and 8 clients (loopback only)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root, csv_path, names = make_root(tmp)
        slice_benchmark(args, root, csv_path, names)
        startup_benchmark(args, tmp)


if __name__ == "__main__":
    main()
