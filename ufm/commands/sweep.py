"""``ufm sweep CONFIG.toml``: run a sweep file in this process, on a process pool, or on Dask."""

from __future__ import annotations

import os
import sys

HELP = "run a sweep of UFM configurations from a TOML file (resumable; local threads, processes or Dask)"


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml",
                        help="sweep file: [sweep] options and save times, [base], [grid], [[configs]]")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="directory of per-configuration records (default: [sweep] out, else "
                             "CONFIG without .toml + '.sweep'); a rerun skips finished configurations")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="Dask scheduler address (tcp://host:port) to run on, or 'local' / 'local:N' "
                             "for a LocalCluster of N worker processes on this machine (needs ufm[dask])")
    parser.add_argument("--processes", metavar="N", type=int, default=None,
                        help="run on a local pool of N processes instead of threads")
    parser.add_argument("--threads", metavar="N", type=int, default=None,
                        help="numba threads (this process), or per task (executors; default 1)")
    parser.add_argument("--chunk-size", metavar="N", type=int, default=None,
                        help="configurations per executor task / per in-process batch")
    parser.add_argument("--retry-failed", action="store_true",
                        help="rerun configurations recorded as failed")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def main(args) -> int:
    from ..sweeps import SweepIncomplete, read_toml, sweep

    try:
        spec = read_toml(args.config)
    except (OSError, ValueError, TypeError) as exc:
        print(f"ufm sweep: {exc}", file=sys.stderr)
        return 2
    out = args.out or spec["out"] or (os.path.splitext(os.path.abspath(args.config))[0] + ".sweep")
    options = dict(spec["options"])
    for key in ("threads", "chunk_size"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.retry_failed:
        options["retry_failed"] = True
    if args.quiet:
        options["progress"] = False
    if args.scheduler and args.processes:
        print("ufm sweep: --scheduler and --processes are exclusive", file=sys.stderr)
        return 2

    cleanup = []
    executor = None
    try:
        if args.scheduler:
            try:
                from distributed import Client, LocalCluster
            except ImportError:
                print("ufm sweep: --scheduler needs Dask: pip install 'ufm[dask]'", file=sys.stderr)
                return 2
            if args.scheduler == "local" or args.scheduler.startswith("local:"):
                n = int(args.scheduler.split(":", 1)[1]) if ":" in args.scheduler else (os.cpu_count() or 1)
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True)
                cleanup.append(cluster)
                client = Client(cluster)
            else:
                client = Client(args.scheduler)
            cleanup.insert(0, client)
            executor = client.get_executor()
        elif args.processes:
            import concurrent.futures as cf
            import multiprocessing as mp
            executor = cf.ProcessPoolExecutor(args.processes, mp_context=mp.get_context("spawn"))
            cleanup.append(executor)
        try:
            result = sweep(spec["configs"], spec["t"], executor=executor, out=out, **options)
        except SweepIncomplete as exc:
            print(f"ufm sweep: {exc}", file=sys.stderr)
            result = exc.result
            code = 1
        except (TypeError, ValueError) as exc:
            print(f"ufm sweep: {exc}", file=sys.stderr)
            return 2
        else:
            code = 0
    finally:
        for obj in cleanup:
            close = getattr(obj, "close", None) or getattr(obj, "shutdown", None)
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
    table = result.write_csv(os.path.join(out, "table.csv"))
    print(result)
    for row in result.failed[:10]:
        print(f"  failed #{row['index']} {row['hash'][:12]}: {row['error'].splitlines()[0]}")
    if len(result.failed) > 10:
        print(f"  ... and {len(result.failed) - 10} more (see {table})")
    print(f"table: {table}")
    return code
