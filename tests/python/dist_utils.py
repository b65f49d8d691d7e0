"""Run a function on several CPU ranks (gloo on 127.0.0.1) from a test, with a deadline.

``run_ranks(fn, world_size, *args)`` starts ``world_size`` fresh processes, initialises the
default process group in each (gloo, a free port, a bounded collective timeout), calls
``fn(rank, world_size, *args)`` and returns what each rank returned, in rank order. A rank that
raises fails the call with that rank's traceback; a rank that hangs past ``timeout`` is killed
with its peers and the call raises ``TimeoutError``: a test never hangs, and nothing is left
running.

``fn`` must be importable by name (a module-level function of a test module), as
``torch.multiprocessing`` pickles it.
"""

import datetime
import os
import socket
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_ranks", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, out_dir, collective_timeout_s, fn, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    result_path = os.path.join(out_dir, f"rank{rank}.pt")
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=collective_timeout_s),
        )
        try:
            value = fn(rank, world_size, *args)
            # gloo can abort a rank that tears down while a peer still talks to it (seen with
            # FSDP2 on torch 2.11): meet first, then destroy.
            dist.barrier()
        finally:
            dist.destroy_process_group()
        torch.save({"ok": True, "value": value}, result_path)
    except BaseException:  # the parent reports it; the exit code alone would lose the traceback
        torch.save({"ok": False, "error": traceback.format_exc()}, result_path)
        raise


def run_ranks(fn, world_size: int, *args, timeout: float = 120.0, collective_timeout: float = 60.0):
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; return their results."""
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.start_processes(
            _worker, args=(world_size, free_port(), out_dir, collective_timeout, fn, args),
            nprocs=world_size, join=False, start_method="spawn",
        )
        failure = None
        try:
            waited = 0.0
            while not context.join(timeout=1.0):
                waited += 1.0
                if waited >= timeout:
                    failure = TimeoutError(f"{fn.__name__} on {world_size} ranks did not finish in {timeout:.0f} s")
                    break
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
            failure = RuntimeError(f"{fn.__name__} failed: {error}")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join(timeout=10)
        if failure is not None:
            # Every rank's own traceback: the first rank to die is often a peer of the one at fault.
            errors = []
            for rank in range(world_size):
                path = os.path.join(out_dir, f"rank{rank}.pt")
                if os.path.exists(path):
                    record = torch.load(path, weights_only=False)
                    if not record["ok"]:
                        errors.append(f"--- rank {rank}:\n{record['error']}")
            failure.args = (failure.args[0] + "\n" + "\n".join(errors),)
            raise failure
        results = []
        for rank in range(world_size):
            record = torch.load(os.path.join(out_dir, f"rank{rank}.pt"), weights_only=False)
            results.append(record["value"])
        return results
