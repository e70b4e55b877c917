"""Ray's life cycle around a search: checks before Ray starts (cluster reachable, storage
writable), ``ray.init``, signals, and where the experiment lives on storage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

from ..config import ExperimentConfig
from ..errors import ConfigError


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (``ray.init`` waits for minutes) when ``host:port`` does not accept connections."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address: '{address}' is not allowed; allowed: host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"address: cannot reach a Ray cluster at '{address}' ({e.strerror or e})") from None


def _check_uri_writable(root: str) -> None:
    """Open ``root`` with pyarrow and make and remove a folder under it, where Ray will write
    (``file:///proc/x`` opens, and failed only inside Ray's Tuner). Under ``root`` itself, not a parent:
    a user allowed to write only below a bucket's prefix can still be let in."""
    import uuid

    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(root)
    probe = f"{path.rstrip('/')}/.nasq_storage_probe_{uuid.uuid4().hex}"
    fs.create_dir(probe, recursive=True)
    fs.delete_dir(probe)


def check_storage(cfg: ExperimentConfig) -> None:
    """Fail before Ray starts when ``--storage`` cannot be opened or written."""
    root = cfg.storage_root
    try:
        if "://" in root:
            _check_uri_writable(root)
        else:  # nothing is created yet: the nearest existing folder must be writable
            existing = next(p for p in (Path(root), *Path(root).parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK):
                raise PermissionError(f"'{existing}' is not a writable folder")
            os.rmdir(tempfile.mkdtemp(dir=existing))  # access() says yes to root even where nothing can be made (/proc)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"storage: cannot use '{root}' ({reason}); allowed: a writable local or shared path, "
                          "or a URI pyarrow can open (s3://, gs://, hdfs://, file://)") from None


def _sigterm_as_interrupt() -> None:
    """SIGTERM stops a search the way Ctrl-C does: Ray Tune saves the experiment, the CLI prints how to
    resume. Installed after ``ray.init``, whose own handler would otherwise end the driver at once."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


LOCK_FILE = ".nasq-ray.lock"


@contextlib.contextmanager
def folder_lock(folder: Path):
    """One driver at a time writes a results folder: two runs of one --name, or two --resume of one
    folder, had both run and left the folder mixed. A lock whose process is gone (kill -9) is taken over."""
    lock = folder / LOCK_FILE
    for attempt in (0, 1):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                text = lock.read_text(errors="replace")
            except OSError:  # not a file (a folder of that name)
                text = ""
            host, _, pid = (text.strip() + " ").partition(" ")
            host, pid = host if host.isprintable() else "", pid.strip()
            pid = pid if pid.isdigit() else ""
            if attempt == 0 and host == socket.gethostname() and pid and not _alive(int(pid)):
                lock.unlink(missing_ok=True)  # stale: its driver was killed
                continue
            raise ConfigError(f"{folder}: another nasq-ray process (pid {pid or '?'} on {host[:60] or '?'}) is writing "
                              f"this results folder; wait for it to end or stop it (if it is gone, delete {lock})") from None
        except OSError as e:  # a folder this user may not write: the run writes its results there
            raise ConfigError(f"out: cannot write in '{folder}' ({type(e).__name__}: {e.strerror or e}); allowed: a "
                              "results folder you can write (--out, or a copy of the run's folder to --resume)") from None
    os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STARTED_LOCAL = False  # init_ray started a private local Ray in this process


def init_ray(cfg: ExperimentConfig) -> bool:
    """Start or join Ray; True where this call started a private local Ray (a machine that cannot grow)."""
    import ray

    if cfg.resources.address not in (None, "local"):
        check_reachable(cfg.resources.address)  # a cluster the run names must be there, even if Ray already runs
    global _STARTED_LOCAL
    if ray.is_initialized():
        return _STARTED_LOCAL  # a local Ray of an earlier run of this process (a notebook, one-shot phases)
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(include_dashboard=False, log_to_driver=cfg.verbose,
                  logging_level=logging.INFO if cfg.verbose else logging.ERROR)
    if address and address != "local":
        if address != cfg.resources.address:
            check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError...
            raise ConfigError(f"address: cannot reach a Ray cluster at '{address}': "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    else:
        # "local": always a private instance, never a stale cluster named in /tmp/ray/ray_current_cluster
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", **kwargs)
    _sigterm_as_interrupt()
    _STARTED_LOCAL = not (address and address != "local")
    return _STARTED_LOCAL


def _alive_nodes() -> list[dict]:
    import ray

    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def _largest(nodes: list[dict]) -> dict[str, float]:
    """The most CPUs and the most GPUs any one of ``nodes`` has (0 where none has any)."""
    return {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in ("CPU", "GPU")}


def largest_node_cpus() -> int:
    """CPUs of the largest node Ray has now (0 where none has any: a cluster whose workers have not
    joined yet)."""
    return int(_largest(_alive_nodes())["CPU"])


def check_trials_fit(cfg: ExperimentConfig, private: bool, workers: int = 0) -> None:
    """A trial asks one node for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (phase 1 on Ray Train:
    ``workers`` such bundles); Ray waits for ever where no node can give them. On the private Ray of
    this run that is refused; on a cluster, which an autoscaler may grow, it is a warning."""
    nodes = _alive_nodes()
    largest = _largest(nodes)
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    need = {"CPU": cfg.resources.cpus_per_trial, "GPU": cfg.resources.gpus_per_trial}
    if workers:
        need = {"CPU": max(1, int(need["CPU"])), "GPU": 1.0 if need["GPU"] > 0 else 0.0}  # as Ray Train asks
    where = "this machine has" if private else "the cluster's largest node has"
    problems = [(f"resources.{key.lower()}s_per_trial", need[key], _of(largest[key], key), largest[key])
                for key in ("CPU", "GPU") if need[key] > largest[key]]
    if workers and not problems and workers * need["CPU"] > total_cpus:
        problems.append(("search.supernet_workers", workers, f"{_of(total_cpus, 'CPU')} for {workers} workers of "
                         f"{_of(need['CPU'], 'CPU')}", int(total_cpus // need["CPU"])))
    for field, value, has, allowed in problems:
        if private:
            raise ConfigError(f"{field}: {_count(value)} is more than {where} ({has}); allowed: up to "
                              f"{_count(allowed)}, or --address of a cluster that has more")
        print(f"warning: {field}: {_count(value)} is more than {where} ({has}); trials wait until a node "
              "that can run one joins", file=sys.stderr)


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _of(x: float, noun: str) -> str:
    return f"{_count(x)} {noun}{'' if x == 1 else 's'}"


def saved_statuses(experiment_path: str) -> dict[str, str]:
    """Trial statuses in the experiment state on storage: what ``--resume`` will see."""
    import pyarrow.fs

    from .experiment_state import read_saved_state, saved_trial_statuses

    text = read_saved_state(*pyarrow.fs.FileSystem.from_uri(experiment_path))
    return saved_trial_statuses(text) if text else {}


def check_checkpoints_kept(experiment_path: str) -> None:
    """Before ``--resume``: every trial Ray will continue needs the checkpoint its saved state names.

    A trial whose checkpoint is gone (its folder deleted or moved) would fail with Ray's traceback
    after the restore; refuse instead, before anything changes. A finished trial's folder is only
    needed for its test accuracy and export: a warning says which are gone."""
    import pyarrow.fs

    from .experiment_state import read_saved_state, saved_checkpoint_paths

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
    text = read_saved_state(fs, root)
    if text is None:  # Ray would start the experiment over, and the folder's results be overwritten
        raise ConfigError(f"resume: no experiment state (experiment_state-*.json) in '{experiment_path}': deleted, or "
                          "the run stopped before its first trial; nothing to resume from (start a new run under "
                          "another --name)")
    try:
        saved = saved_checkpoint_paths(text)
    except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"resume: the experiment state in '{experiment_path}' is damaged ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); nothing to resume from") from None
    gone = {tid: (status, rel) for tid, (status, rel) in saved.items()
            if fs.get_file_info(f"{root}/{rel}").type == pyarrow.fs.FileType.NotFound}
    finished = sorted(rel.split("/")[0] for status, rel in gone.values() if status == "TERMINATED")
    unfinished = sorted(rel for status, rel in gone.values() if status != "TERMINATED")
    if unfinished:
        raise ConfigError(f"resume: {len(unfinished)} unfinished trial(s) need checkpoints that are gone from "
                          f"'{experiment_path}' ({_listed(unfinished)}; deleted or moved?); put them back to "
                          "continue, or start a new run")
    if finished:
        print(f"warning: the folders of {len(finished)} finished trial(s) are gone ({_listed(finished)}): their "
              "results are kept, their test accuracy and export are not", file=sys.stderr)


def _listed(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def allow_pending_trials(cfg: ExperimentConfig) -> None:
    """Let as many trials wait for their actors as the cluster has trial slots.

    With a search algorithm Ray Tune keeps one pending trial at a time by default, so on a cluster
    each new trial waits for the previous one's actor to start, and short trials never spread to
    more nodes than the first. (``TUNE_MAX_PENDING_TRIALS_PG`` set by the user wins.)
    """
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    slots = int(cpus // max(cfg.resources.cpus_per_trial, 1e-9)) or 1
    if cfg.search.max_concurrent:
        slots = min(slots, cfg.search.max_concurrent)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, slots)))
