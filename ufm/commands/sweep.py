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
    parser.add_argument("--connect-timeout", metavar="SECONDS", type=_positive(float), default=10.0,
                        help="how long to try reaching the --scheduler address (default 10)")
    parser.add_argument("--processes", metavar="N", type=_positive(int), default=None,
                        help="run on a local pool of N processes instead of threads")
    parser.add_argument("--threads", metavar="N", type=_positive(int), default=None,
                        help="numba threads (this process), or per task (executors; default 1)")
    parser.add_argument("--chunk-size", metavar="N", type=_positive(int), default=None,
                        help="configurations per executor task / per in-process batch")
    parser.add_argument("--retry-failed", action="store_true",
                        help="rerun configurations recorded as failed")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _positive(kind):
    """argparse type: a number of ``kind`` > 0 (so --processes 0 is refused on the command line)."""
    import argparse

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a value > 0, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _client(address: str, timeout: float):
    """A Dask client for ``address`` ('local', 'local:N' or a scheduler address), with the
    objects to close afterwards; a bad or unreachable address is a ValueError naming it."""
    from distributed import Client, LocalCluster
    if address == "local" or address.startswith("local:"):
        count = address.split(":", 1)[1] if ":" in address else str(os.cpu_count() or 1)
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--scheduler: expected 'local', 'local:N' with N >= 1 workers, or tcp://host:port, "
                             f"got {address!r}")
        cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True)
        return Client(cluster), [cluster]
    try:
        return Client(address, timeout=timeout), []
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"--scheduler: cannot reach a Dask scheduler at {address!r} within {timeout:g} s "
                         f"({reason})") from None


def main(args) -> int:
    from ..sweeps import SweepIncomplete, read_toml, sweep
    from ._common import announce_first_compile

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
                import distributed  # noqa: F401
            except ImportError:
                print("ufm sweep: --scheduler needs Dask: pip install 'ufm[dask]'", file=sys.stderr)
                return 2
            try:
                client, owned = _client(args.scheduler, args.connect_timeout)
            except ValueError as exc:
                print(f"ufm sweep: {exc}", file=sys.stderr)
                return 2
            cleanup.extend([client, *owned])
            executor = client.get_executor()
        elif args.processes:
            import concurrent.futures as cf
            import multiprocessing as mp
            executor = cf.ProcessPoolExecutor(args.processes, mp_context=mp.get_context("spawn"))
            cleanup.append(executor)
        if not args.quiet:
            announce_first_compile("ufm sweep", module="sweep", function="integrate_many")
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
    if result.failed and code == 0:
        print(f"ufm sweep: {len(result.failed)} of {len(result)} configuration(s) failed (their errors are in "
              f"{table}; --retry-failed reruns them)", file=sys.stderr)
        code = 1
    return code
