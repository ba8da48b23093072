"""Explorer speed: slice latency under 8 concurrent clients, and start-up on 32,735 rows.

Stages: in-process, without HTTP, per 512 x 512 slice (min and median, wall and CPU): PNG
read (Pillow, OpenCV), store read (npy, zarr), window (float formula, lookup table),
overlay, encode (Pillow, OpenCV); then the whole read + window + encode of the previous
version (Pillow, float window) and of this one side by side, with their ratio.

Slices: the server runs in its own process on 127.0.0.1; 8 client threads send 2,000
``/api/slice/{name}?window=lung`` requests (bounded by ``--time-limit`` seconds) over the
slices of one series; every answer must be a 200 PNG. Cold path: both caches off (every
request reads, windows and encodes), from the PNGs and from a training store (npy, zarr).
Warm path: caches on, after one request per slice (every answer is then a cached PNG).
Printed per run: p50/p95/max latency, the target it is held to, the server's and the
clients' CPU time, the server's CPU per request, and the load average (the machine is
shared). ``--profile`` also prints the server's event-loop thread's top functions
(cProfile) for the warm path: the HTTP and framework cost per request.

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
import signal
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


def serve_only(args) -> None:
    """The server process: caches as asked; ``--profile`` writes cProfile stats on exit."""
    import cProfile

    from deeplesion.data.store import open_store
    from deeplesion.explorer.images import SliceReader
    from deeplesion.explorer.server import open_explorer, run

    root, csv_path, port = args.serve_only
    explorer = open_explorer(root, csv_path=csv_path)
    source = open_store(args.store) if args.store else None
    cache_mib = 256 if args.cache else 0
    explorer.reader = SliceReader(root, source, cache_slices=args.cache, cache_mib=cache_mib)
    if args.profile_out:
        profiler = cProfile.Profile()

        def dump(signum, frame) -> None:  # uvicorn re-raises SIGTERM once it has stopped
            profiler.disable()
            profiler.dump_stats(args.profile_out)
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, dump)
        signal.signal(signal.SIGUSR1, lambda signum, frame: profiler.enable())  # measuring
    run(explorer.app(png_level=args.png_level), "127.0.0.1", int(port))


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


def load() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed(job, items, repeat: int) -> tuple[list[float], list[float]]:
    """Per-item wall and CPU seconds of ``job(item)``."""
    wall, cpu = [], []
    for _ in range(repeat):
        for item in items:
            t, c = time.perf_counter(), time.process_time()
            job(item)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return wall, cpu


def ms(values: list[float]) -> str:
    return f"min {min(values) * 1e3:.2f} / median {statistics.median(values) * 1e3:.2f} ms"


def previous_path(path: Path, window) -> bytes:
    """Read + window + encode as the first version did: Pillow, float window, Pillow."""
    import io

    from PIL import Image

    from deeplesion.data.slices import png_to_hu, read_png_raw
    from deeplesion.data.windowing import apply_window

    grey = apply_window(png_to_hu(read_png_raw(path)), window)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def stages(root: Path, csv_path: Path, names: list[str], repeat: int, stores) -> float:
    """Print each stage's cost in-process; return this version's median per slice."""
    import io

    from PIL import Image

    from deeplesion.data.annotations import load_lesions
    from deeplesion.data.slices import png_to_hu, read_png_raw
    from deeplesion.data.store import open_store
    from deeplesion.data.windowing import apply_window, parse_window
    from deeplesion.explorer.images import SliceReader, check_name, encode_png, window_raw
    from deeplesion.review.render import draw_lesions

    reader = SliceReader(root, cache_slices=0)
    parsed = [check_name(n) for n in names]
    paths = [reader._png_path(n) for n in parsed]
    window = parse_window("lung")
    raws = [read_png_raw(p) for p in paths]
    greys = [window_raw(r, window) for r in raws]
    lesion = load_lesions(csv_path).lesions[0]
    rows = [
        ("read PNG, Pillow", lambda p: read_png_raw(p), paths),
        ("read PNG, OpenCV", lambda p: read_png_raw(p, opencv=True), paths),
    ]
    for fmt, out in stores:
        source = open_store(out)
        rows.append(
            (f"read store {fmt}", lambda n, s=source: s.read_raw(n.folder, n.slice_number), parsed)
        )
    pil = lambda g: Image.fromarray(g).save(io.BytesIO(), format="PNG", compress_level=1)  # noqa: E731
    rows += [
        ("window, float formula", lambda r: apply_window(png_to_hu(r), window), raws),
        ("window, lookup table", lambda r: window_raw(r, window), raws),
        ("overlay, 1 lesion", lambda g: draw_lesions(g, [lesion]), greys),
        ("encode grey, Pillow level 1", pil, greys),
        ("encode grey, OpenCV level 1", encode_png, greys),
        ("encode grey, OpenCV level 0", lambda g: encode_png(g, 0), greys),
    ]
    print(f"stages per 512 x 512 slice, in-process ({len(names)} slices x {repeat}; {load()}):")
    for label, job, items in rows:
        wall, cpu = timed(job, items, repeat)
        print(f"  {label:30s} wall {ms(wall)}, CPU {ms(cpu)}")
    old_wall, old_cpu = timed(lambda p: previous_path(p, window), paths, repeat)
    new_wall, new_cpu = timed(
        lambda n: encode_png(window_raw(reader.read_raw(n), window), 0), parsed, repeat
    )
    print(
        f"read PNG + window + encode, side by side ({load()}): previous {ms(old_wall)} "
        f"(CPU {ms(old_cpu)}); now (level 0) {ms(new_wall)} (CPU {ms(new_cpu)}); median ratio "
        f"{statistics.median(old_wall) / statistics.median(new_wall):.2f}x"
    )
    return statistics.median(new_wall)


def hammer(base: str, names: list[str], requests: int, clients: int, limit_s: float, kind: str):
    """``clients`` threads, each one keep-alive connection, ``requests`` in all; latencies.

    ``kind='stdlib'`` (http.client: about a third of httpx's CPU per request, which on 2
    shared cores is taken from the server being measured) or ``'httpx'``.
    """
    import http.client
    from urllib.parse import urlsplit

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + limit_s
    per_client = requests // clients
    host, port = urlsplit(base).hostname, urlsplit(base).port

    def get_stdlib(conn, path: str) -> tuple[int, str, int]:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        return r.status, r.getheader("content-type", ""), len(body)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        session = httpx.Client(timeout=30, base_url=base)
        try:
            for i in range(per_client):
                if time.perf_counter() > deadline:
                    return
                name = names[(k * 7 + i) % len(names)]
                path = f"/api/slice/{name}?window=lung"
                t = time.perf_counter()
                if kind == "stdlib":
                    status, ctype, size = get_stdlib(conn, path)
                else:
                    r = session.get(path)
                    status, ctype, size = r.status_code, r.headers["content-type"], len(r.content)
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    if status != 200 or ctype != "image/png" or size < 100:
                        errors.append(f"{name}: {status} {ctype} {size} bytes")
        finally:
            conn.close()
            session.close()

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
    from deeplesion.convert.store import build_store

    stores = []
    for fmt in ("npy", "zarr"):
        out = root.parent / f"store-{fmt}"
        build_store(root, out, csv_path=csv_path, fmt=fmt)
        stores.append((fmt, out))
    base = stages(root, csv_path, names, args.repeat, stores)
    png_ms, store_ms = 100, 50
    # label, slice cache, store, PNG level (0 on loopback, 1 for another host), target
    configs = [("cold PNG", 0, None, 0, png_ms)]
    configs += [(f"cold store {fmt}", 0, out, 0, store_ms) for fmt, out in stores]
    configs += [("cold store npy, level 1 (non-loopback host)", 0, stores[0][1], 1, store_ms)]
    configs += [("warm PNG", 24, None, 0, png_ms)]
    for label, cache, store, level, target_ms in configs:
        if args.only and not any(word in label for word in args.only.split(",")):
            continue
        port = free_port()
        profile = Path(tempfile.gettempdir()) / f"serve-{port}.prof"
        warm = cache > 0
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-only", str(root), str(csv_path), str(port)]
            + ["--cache", str(cache), "--png-level", str(level)]
            + (["--store", str(store)] if store else [])
            + (["--profile-out", str(profile)] if args.profile and warm else []),
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until_up(url + "api/meta", proc)
            if warm:  # one request per slice: every measured answer is then cached
                for name in names:
                    httpx.get(f"{url}api/slice/{name}?window=lung", timeout=30)
            if args.profile and warm:
                os.kill(proc.pid, signal.SIGUSR1)  # profile the measured requests only
            before = load()
            cpu0, clock0 = cpu_seconds(proc.pid), time.process_time()
            lat, errors, wall = hammer(
                url, names, args.requests, args.clients, args.time_limit, args.client
            )
            cpu = cpu_seconds(proc.pid) - cpu0
            client_cpu = time.process_time() - clock0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        p50, p95 = pct(lat, 50), pct(lat, 95)
        verdict = "meets" if p95 * 1e3 <= target_ms else "MISSES"
        print(
            f"{label}: {len(lat)} requests, {args.clients} {args.client} clients, "
            f"{len(errors)} errors, "
            f"{len(lat) / wall:.0f}/s; p50 {p50 * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms, max "
            f"{max(lat) * 1e3:.1f} ms ({verdict} p95 <= {target_ms} ms); p50 / in-process "
            f"median {p50 / base:.1f}x; CPU server {cpu:.1f} s ({cpu / len(lat) * 1e3:.2f} "
            f"ms/request, {cpu / wall:.2f} cores), clients {client_cpu:.1f} s; {before} "
            f"before, {load()} after"
        )
        for e in errors[:5]:
            print("  error:", e)
        if profile.is_file():
            import pstats

            print(f"  server event-loop thread, top 12 by own time ({len(lat)} requests):")
            stats = pstats.Stats(str(profile))
            for func, (_, calls, tottime, _, _) in sorted(
                stats.stats.items(), key=lambda kv: -kv[1][2]
            )[:12]:
                where = f"{Path(func[0]).name}:{func[1]}({func[2]})"
                print(f"    {tottime / len(lat) * 1e6:7.1f} us/request  {calls:7d} calls  {where}")
            profile.unlink()


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
    parser.add_argument("--png-level", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="cProfile the warm server")
    parser.add_argument("--client", choices=("stdlib", "httpx"), default="stdlib")
    parser.add_argument("--only", default="", help="runs whose label has one of these words")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up runs")
    args = parser.parse_args()
    if args.serve_only:
        serve_only(args)
        return
    if not 1 <= args.requests <= 2000 or not 1 <= args.clients <= 8:
        parser.error("at most 2,000 requests and 8 clients (loopback only)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root, csv_path, names = make_root(tmp)
        slice_benchmark(args, root, csv_path, names)
        if not args.no_startup:
            startup_benchmark(args, tmp)


if __name__ == "__main__":
    main()
