"""A throwaway single-node SLURM cluster for the test suite.

The cluster is private to one pytest session: its own ``munged`` (own socket,
the system key ``/etc/munge/munge.key``), its own ``slurmctld`` and ``slurmd``
on free TCP ports, its own ``slurm.conf`` in a fresh directory
``/tmp/fedumm-slurm-XXXXXX``, and no accounting database.  Nothing global is
overwritten (``/etc/slurm`` stays untouched); the clients find the cluster
through the ``SLURM_CONF`` environment variable and through wrapper scripts
``<cluster dir>/bin/{srun,sbatch,squeue,...}`` that pin ``SLURM_CONF`` (the
slurm-jobstep plugin strips ``SLURM_CONF`` from the environment of the
``srun`` it runs inside a job).  While the cluster is up, ``start_cluster``
sets ``SLURM_CONF`` and ``PATH`` (wrapper dir, then the venv's bin) in
``os.environ``; ``ClusterInfo.env`` holds the same environment.

Use from a test (the ``slurm_cluster`` fixture is session scoped)::

    from slurm_cluster import slurm_cluster, snakemake_slurm_command  # noqa: F401

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        cmd = snakemake_slurm_command(slurm_cluster, tmp_path / "Snakefile",
                                      tmp_path, "--jobs", "2")
        subprocess.run(cmd, cwd=tmp_path, env=slurm_cluster.env, check=True)

Without pytest::

    with start_cluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

The daemons run as root (``SlurmUser=root``), ``munged`` as user ``munge``.
When the SLURM or MUNGE programs are missing, ``missing_requirements()`` returns
a reason (and the fixture skips with it); every other problem raises
``ClusterError`` with the tails of the daemon logs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"

#: Every cluster directory starts with this; it marks our daemons for the
#: clean-up of clusters left behind by a killed test run.
DIR_PREFIX = "fedumm-slurm-"
PARTITION = "debug"
NODE_FEATURE = "fedumm_node"
NODE_MIN_CPUS = 4  # the node's feature, for tests of sbatch -C (constraint)
MUNGE_KEY = Path("/etc/munge/munge.key")
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")

# program -> package that ships it (Debian/Ubuntu)
REQUIRED_PROGRAMS = {
    "munged": "munge",
    "slurmctld": "slurmctld (slurm-wlm)",
    "slurmd": "slurmd (slurm-wlm)",
    "sbatch": "slurm-client",
    "squeue": "slurm-client",
    "sinfo": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
    "srun": "slurm-client",
}
INSTALL_HINT = (
    "install them with `make system-deps` or "
    "`sudo apt-get install slurm-wlm munge` (Debian/Ubuntu)"
)

NODE_UP_TIMEOUT_S = 60.0
DAEMON_STOP_TIMEOUT_S = 20.0
MEMORY_CAP_MB = 8000


class ClusterError(RuntimeError):
    """The cluster could not be started (not a missing-program problem)."""


def _search_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    parts += [d for d in SBIN_DIRS if d not in parts]
    return os.pathsep.join(p for p in parts if p)


def which(program: str) -> str | None:
    """Find a real program on PATH or in the sbin directories."""
    dirs = [d for d in _search_path().split(os.pathsep) if DIR_PREFIX not in d]
    return shutil.which(program, path=os.pathsep.join(dirs))


def missing_requirements() -> str | None:
    """Return why a cluster can't be started here, or None if it can."""
    missing = [p for p in REQUIRED_PROGRAMS if which(p) is None]
    if missing:
        packages = sorted({REQUIRED_PROGRAMS[p] for p in missing})
        return (
            f"SLURM test cluster unavailable: missing program(s) "
            f"{', '.join(missing)} (packages: {', '.join(packages)}); "
            f"{INSTALL_HINT}"
        )
    if os.geteuid() != 0:
        return (
            "SLURM test cluster unavailable: starting munged/slurmctld/slurmd "
            "needs root (SlurmUser=root); run the tests as root"
        )
    return None


@dataclass
class ClusterInfo:
    """A running cluster.  ``env`` is the environment for client commands."""

    root: Path
    conf: Path
    nodename: str
    cpus: int
    mem_mb: int
    ctld_port: int
    slurmd_port: int
    partition: str = PARTITION
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def logs_tail(self, lines: int = 40) -> str:
        """The last lines of every daemon log, for error messages."""
        out = []
        for log in sorted(self.log_dir.glob("*")):
            try:
                text = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                text = [f"<unreadable: {exc}>"]
            out.append(f"----- {log.name} (last {lines} lines) -----")
            out.extend(text)
        return "\n".join(out)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster, return stdout."""
        proc = subprocess.run(
            list(args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n{self.logs_tail()}"
            )
        return proc.stdout

    def wait_for_jobs(self, timeout: float = 60) -> None:
        """Wait until the queue holds no pending/running job."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-o", "%i", check=False).strip():
                return
            time.sleep(0.5)
        raise ClusterError(
            f"jobs still queued after {timeout:.0f}s:\n"
            f"{self.run('squeue', check=False)}\n{self.logs_tail()}"
        )


# --------------------------------------------------------------------- helpers


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime); the command name (field 2) may contain spaces
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(root: Path) -> bool:
    try:
        pid_s, start = (root / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid_s)) == start


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _mem_mb() -> int:
    """A RealMemory safely below what the machine has."""
    total = avail = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            if key == "MemTotal":
                total = int(value.split()[0]) // 1024
            elif key == "MemAvailable":
                avail = int(value.split()[0]) // 1024
    basis = avail or total or 2000
    return max(500, min(MEMORY_CAP_MB, int(basis * 0.8)))


def _kill_pid(pid: int, timeout: float = DAEMON_STOP_TIMEOUT_S) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _proc_start_time(pid) is None:
            return
        # reap it if it is our child (otherwise it stays a zombie)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _cluster_processes() -> dict[Path, list[int]]:
    """Processes of our clusters, by cluster dir: the daemons (munged,
    slurmctld, slurmscriptd, slurmd, slurmstepd) and the processes of jobs
    (they have SLURM_JOB_ID and our SLURM_CONF in their environment)."""
    found: dict[Path, list[int]] = {}
    names = {"munged", "slurmctld", "slurmscriptd", "slurmd", "slurmstepd"}
    tmp = Path(tempfile.gettempdir())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            if (proc / "comm").read_text().strip() in names:
                blob = (proc / "cmdline").read_bytes() + b"\0" + environ
            elif b"\0SLURM_JOB_ID=" in b"\0" + environ:
                blob = b"\0".join(
                    item
                    for item in environ.split(b"\0")
                    if item.startswith(b"SLURM_CONF=")
                )
            else:
                continue
        except OSError:
            continue
        for item in blob.split(b"\0"):
            text = item.decode(errors="replace")
            idx = text.find(str(tmp / DIR_PREFIX))
            if idx < 0:
                continue
            rest = text[idx + len(str(tmp)) + 1 :]
            root = tmp / rest.split("/", 1)[0]
            found.setdefault(root, []).append(int(proc.name))
            break
    return found


def _stale_roots_and_pids() -> dict[Path, list[int]]:
    """Cluster dirs (and their daemons) whose owning test run is gone."""
    found = {
        root: pids
        for root, pids in _cluster_processes().items()
        if not _owner_alive(root)
    }
    # directories without live processes and without a live owner
    tmp = Path(tempfile.gettempdir())
    for root in tmp.glob(DIR_PREFIX + "*"):
        if root.is_dir() and not _owner_alive(root):
            found.setdefault(root, [])
    return found


def cleanup_stale_clusters() -> list[Path]:
    """Kill daemons of clusters whose test run died; remove their dirs."""
    stale = _stale_roots_and_pids()
    for root, pids in stale.items():
        for pid in pids:
            _kill_pid(pid, timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return sorted(stale)


def _ensure_munge_key() -> None:
    if MUNGE_KEY.exists():
        return
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    mungekey = which("mungekey")
    if mungekey:
        subprocess.run(
            [mungekey, "--create", f"--keyfile={MUNGE_KEY}"],
            check=True,
            capture_output=True,
        )
    else:
        MUNGE_KEY.write_bytes(os.urandom(1024))
    with contextlib.suppress(KeyError):
        pw = pwd.getpwnam("munge")
        os.chown(MUNGE_KEY.parent, pw.pw_uid, pw.pw_gid)
        os.chown(MUNGE_KEY, pw.pw_uid, pw.pw_gid)
    os.chmod(MUNGE_KEY, 0o400)


def _wait_for(predicate, timeout: float, what: str, cluster: ClusterInfo) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with status {proc.returncode} while waiting "
                    f"for {what}\n{cluster.logs_tail()}"
                )
        if predicate():
            return
        time.sleep(0.3)
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {what}\n{cluster.logs_tail()}"
    )


SLURM_CONF_TEMPLATE = """\
# Generated by tests/slurm_cluster.py: a private single-node test cluster.
ClusterName=fedumm
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={root}/plugstack.conf
# no cgroups in the sandbox, no accounting database
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# The node may claim more CPUs than the machine has (NODE_MIN_CPUS), so that a test can ask for
# more CPUs than the submitting host's cores and see them reach sbatch.
SlurmdParameters=config_overrides
ReturnToService=2
# Keep finished jobs visible to squeue for 10 min: snakemake-executor-plugin-
# slurm only uses `squeue` for status checks when MinJobAge >= 3 x
# --slurm-init-seconds-before-status-checks, else it falls back to sacct,
# which has no data without an accounting database.
MinJobAge=600
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Features={feature} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


# Client commands that get a wrapper pinning SLURM_CONF to the test cluster.
CLIENT_PROGRAMS = (
    "srun", "sbatch", "squeue", "scancel", "scontrol", "sinfo", "sacct",
    "sacctmgr", "sshare", "salloc", "sattach", "sstat",
)


def _write_client_wrappers(root: Path, conf: Path) -> Path:
    """``<root>/bin/<cmd>`` wrappers that run the real command on our cluster.

    Needed because snakemake-executor-plugin-slurm-jobstep strips every
    ``SLURM_*`` variable except a few job ids (SLURM_CONF included) from the
    environment of the ``srun`` it starts inside a job; without the wrapper
    that srun looks for /etc/slurm/slurm.conf and fails ("Could not establish
    a configuration source").
    """
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in CLIENT_PROGRAMS:
        real = which(name)
        if real is None:
            continue
        wrapper = bin_dir / name
        wrapper.write_text(
            f"#!/bin/sh\nSLURM_CONF='{conf}'\nexport SLURM_CONF\n"
            f"exec '{real}' \"$@\"\n"
        )
        wrapper.chmod(0o755)
    return bin_dir


def _start_munged(cluster: ClusterInfo, munge_dir: Path) -> None:
    cmd = [
        which("munged"),
        "--foreground",
        f"--socket={munge_dir / 'munge.sock'}",
        f"--pid-file={munge_dir / 'munged.pid'}",
        f"--seed-file={munge_dir / 'munged.seed'}",
        f"--log-file={cluster.log_dir / 'munged.log'}",
        f"--key-file={MUNGE_KEY}",
    ]
    kwargs: dict = {}
    try:
        pw = pwd.getpwnam("munge")
    except KeyError:
        cmd.append("--force")  # no munge user: run as root
    else:
        os.chown(munge_dir, pw.pw_uid, pw.pw_gid)
        (cluster.log_dir / "munged.log").touch()
        os.chown(cluster.log_dir / "munged.log", pw.pw_uid, pw.pw_gid)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    out = open(cluster.log_dir / "munged.out", "wb")
    cluster.procs["munged"] = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        **kwargs,
    )
    out.close()
    _wait_for(
        lambda: (munge_dir / "munge.sock").exists(), 20, "the munge socket", cluster
    )


def _start_daemon(cluster: ClusterInfo, name: str, *args: str) -> None:
    out = open(cluster.log_dir / f"{name}.out", "wb")
    cluster.procs[name] = subprocess.Popen(
        [which(name), "-D", "-f", str(cluster.conf), *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=cluster.env,
        start_new_session=True,
        cwd=cluster.root,
    )
    out.close()


def _node_idle(cluster: ClusterInfo) -> bool:
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%T"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=15,
    )
    return proc.returncode == 0 and proc.stdout.strip() == "idle"


def _stop(cluster: ClusterInfo) -> None:
    """Cancel jobs, shut the daemons down, stop munged.  Never raises."""
    daemons = {n: p for n, p in cluster.procs.items() if n != "munged"}
    if any(p.poll() is None for p in daemons.values()):
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--full", "--state=PENDING", check=False)
            ids = cluster.run("squeue", "-h", "-o", "%i", check=False).split()
            if ids:
                cluster.run("scancel", "--full", *ids, check=False)
                cluster.wait_for_jobs(timeout=15)
        with contextlib.suppress(Exception):
            cluster.run("scontrol", "shutdown", check=False, timeout=15)
    deadline = time.monotonic() + DAEMON_STOP_TIMEOUT_S
    for proc in daemons.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # job step daemons (slurmstepd) of this cluster that outlived slurmd
    own = {p.pid for p in cluster.procs.values()}
    for pid in _cluster_processes().get(cluster.root, []):
        if pid not in own:
            _kill_pid(pid, timeout=5)
    munged = cluster.procs.get("munged")
    if munged is not None and munged.poll() is None:
        munged.terminate()
        try:
            munged.wait(timeout=10)
        except subprocess.TimeoutExpired:
            munged.kill()
            munged.wait()


# ------------------------------------------------------------------ public API


@contextlib.contextmanager
def start_cluster(
    base_dir: Path | None = None, *, keep_dir: bool | None = None
) -> Iterator[ClusterInfo]:
    """Start a private single-node cluster; stop it on exit.

    ``base_dir`` is where the cluster directory is created (default: the
    system temp dir, usually /tmp; it must be short -- SLURM makes unix
    sockets below it -- and traversable by the ``munge`` user).  The directory
    is removed on exit unless ``keep_dir`` (default: env FEDUMM_KEEP_SLURM=1).
    While the cluster is up, ``os.environ["SLURM_CONF"]`` points at it.
    Raises ``ClusterError`` if something goes wrong; check
    ``missing_requirements()`` first to tell "not installed" apart.
    """
    reason = missing_requirements()
    if reason:
        raise ClusterError(reason)
    if keep_dir is None:
        keep_dir = os.environ.get("FEDUMM_KEEP_SLURM") == "1"
    cleanup_stale_clusters()
    _ensure_munge_key()

    root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base_dir))
    os.chmod(root, 0o755)
    (root / "owner").write_text(f"{os.getpid()} {_proc_start_time(os.getpid())}\n")
    for sub in ("state", "spool", "run", "log"):
        (root / sub).mkdir()
    munge_dir = root / "munge"
    munge_dir.mkdir(mode=0o755)
    (root / "plugstack.conf").write_text("")

    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    bin_dir = _write_client_wrappers(root, conf)
    env = dict(os.environ)
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = os.pathsep.join(
        [str(bin_dir), str(Path(sys.executable).parent), _search_path()]
    )
    for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        if var != "SLURM_CONF":
            del env[var]
    cluster = ClusterInfo(
        root=root,
        conf=conf,
        nodename=host,
        cpus=max(_cpus(), NODE_MIN_CPUS),
        mem_mb=_mem_mb(),
        ctld_port=ctld_port,
        slurmd_port=slurmd_port,
        env=env,
    )
    conf.write_text(
        SLURM_CONF_TEMPLATE.format(
            host=host,
            root=root,
            ctld_port=ctld_port,
            slurmd_port=slurmd_port,
            munge_socket=munge_dir / "munge.sock",
            cpus=cluster.cpus,
            mem_mb=cluster.mem_mb,
            partition=PARTITION,
            feature=NODE_FEATURE,
        )
    )

    old_env = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    ok = False
    try:
        _start_munged(cluster, munge_dir)
        _start_daemon(cluster, "slurmctld", "-c", "-i")
        _wait_for(
            lambda: subprocess.run(
                ["scontrol", "ping"], env=env, capture_output=True, timeout=15
            ).returncode
            == 0,
            NODE_UP_TIMEOUT_S,
            "slurmctld to answer `scontrol ping`",
            cluster,
        )
        _start_daemon(cluster, "slurmd", "-N", host)
        _wait_for(
            lambda: _node_idle(cluster),
            NODE_UP_TIMEOUT_S,
            f"node {host} to become idle",
            cluster,
        )
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        os.environ["PATH"] = env["PATH"]
        yield cluster
        ok = True
    finally:
        _stop(cluster)
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep_dir or not ok:
            # keep logs of a failed run for inspection; a later run removes it
            (root / "owner").unlink(missing_ok=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def snakemake_slurm_command(
    cluster: ClusterInfo,
    snakefile: Path,
    workdir: Path,
    *extra: str,
    default_resources: Sequence[str] = ("mem_mb=100", "runtime=5"),
) -> list[str]:
    """The snakemake command line that runs ``snakefile`` on ``cluster``.

    Uses the repository's ``profiles/slurm`` profile, overriding what a test
    cluster needs: squeue status checks started after 2 s, the ``debug``
    partition, no account, small default resources, short latency wait.
    Run it with ``env=cluster.env`` (SLURM_CONF set, the venv's bin on PATH).
    """
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--profile",
        str(SLURM_PROFILE),
        "--executor",
        "slurm",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
        "--retries",
        "0",
        "--default-resources",
        f"slurm_partition={cluster.partition}",
        *default_resources,
        *extra,
    ]


try:  # the fixture, for tests/conftest.py: `from slurm_cluster import slurm_cluster`
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    # One cluster per process even if the fixture is registered twice (e.g.
    # imported both by conftest.py and by a test module).
    _shared: dict = {"cluster": None, "users": 0, "stack": None}

    @pytest.fixture(scope="session")
    def slurm_cluster() -> Iterator[ClusterInfo]:
        """A running single-node SLURM cluster (skips if SLURM isn't installed)."""
        reason = missing_requirements()
        if reason:
            pytest.skip(reason)
        if _shared["cluster"] is None:
            stack = contextlib.ExitStack()
            _shared["cluster"] = stack.enter_context(start_cluster())
            _shared["stack"] = stack
        _shared["users"] += 1
        try:
            yield _shared["cluster"]
        finally:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                stack, _shared["stack"], _shared["cluster"] = _shared["stack"], None, None
                stack.close()
