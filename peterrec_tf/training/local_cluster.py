"""A MultiWorkerMirroredStrategy cluster of local processes (tests and benchmarks).

`run_local_cluster(command, num_workers)` starts `num_workers` copies of `command`, each
with a TF_CONFIG naming the same `127.0.0.1` ports and its own index (worker 0 is the
chief), and waits for all of them.  Every output line is kept with the time it arrived,
and each process's resource usage comes from `os.wait4` (peak RSS).  If one worker fails
the others are stopped: they would otherwise wait in a collective for ever.

On a real cluster the same TF_CONFIG is written per host (BUILD_NOTES.md, "Beyond one
machine").
"""

import dataclasses
import json
import os
import socket
import subprocess
import threading
import time


def free_ports(count):
    """`count` TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(hosts, index, kind="worker"):
    """The TF_CONFIG JSON of task `index` in a cluster of `hosts` ("host:port") workers."""
    return json.dumps({"cluster": {"worker": list(hosts)}, "task": {"type": kind, "index": index}})


@dataclasses.dataclass
class WorkerRun:
    index: int
    returncode: int
    lines: list          # [(seconds since the cluster started, line)]
    peak_rss_bytes: int  # ru_maxrss of the process (Linux reports KiB)
    user_seconds: float
    system_seconds: float

    @property
    def output(self):
        return "".join(line for _, line in self.lines)


def run_local_cluster(command, num_workers, env=None, cwd=None, timeout=600):
    """Run `command` (an argv list) as `num_workers` workers on localhost ports; returns
    one `WorkerRun` per worker (index order).  Raises `TimeoutError` (all workers killed)
    when the cluster has not finished within `timeout` seconds."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    hosts = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
    started = time.monotonic()
    processes, readers, lines = [], [], []
    for index in range(num_workers):
        worker_env = dict(os.environ if env is None else env,
                          TF_CONFIG=tf_config(hosts, index), PYTHONUNBUFFERED="1")
        process = subprocess.Popen(command, cwd=cwd, env=worker_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        lines.append([])
        reader = threading.Thread(target=_collect, args=(process.stdout, lines[-1], started),
                                  daemon=True)
        reader.start()
        readers.append(reader)
    usage = [None] * num_workers
    try:
        pending = set(range(num_workers))
        while pending:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the {num_workers}-worker cluster did not finish in "
                                   f"{timeout} s")
            for index in sorted(pending):
                pid, status, rusage = os.wait4(processes[index].pid, os.WNOHANG)
                if pid == 0:
                    continue
                pending.discard(index)
                processes[index].returncode = os.waitstatus_to_exitcode(status)
                usage[index] = rusage
                if processes[index].returncode != 0:
                    _stop(processes, pending)  # the others would wait in a collective
                    pending.clear()
                    break
            time.sleep(0.05)
    except BaseException:
        _stop(processes, range(num_workers))
        raise
    for reader in readers:
        reader.join(timeout=10)
    return [WorkerRun(index, processes[index].returncode, lines[index],
                      (usage[index].ru_maxrss * 1024) if usage[index] else 0,
                      usage[index].ru_utime if usage[index] else 0.0,
                      usage[index].ru_stime if usage[index] else 0.0)
            for index in range(num_workers)]


def _collect(stream, into, started):
    for line in stream:
        into.append((time.monotonic() - started, line))
    stream.close()


def _stop(processes, indices):
    for index in indices:
        process = processes[index]
        if process.returncode is None:
            process.kill()
            try:
                _, status, _ = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                pass
