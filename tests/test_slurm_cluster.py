"""Smoke tests for the private single-node SLURM cluster and the slurm profile."""

from __future__ import annotations

import subprocess
import textwrap
import time

import pytest

try:
    from slurm_cluster import (  # noqa: F401  (slurm_cluster is a fixture)
        ClusterInfo,
        slurm_cluster,
        snakemake_slurm_command,
    )
except ImportError:  # tests/ imported as a package
    from tests.slurm_cluster import (  # noqa: F401
        ClusterInfo,
        slurm_cluster,
        snakemake_slurm_command,
    )

pytestmark = pytest.mark.slurm


def _wait_for_file(path, cluster: ClusterInfo, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return
        time.sleep(0.2)
    pytest.fail(
        f"{path} not written within {timeout:.0f}s\n"
        f"{cluster.run('squeue', '--states=all', check=False)}\n{cluster.logs_tail()}"
    )


def test_sbatch_runs_a_job(slurm_cluster: ClusterInfo, tmp_path):
    out = slurm_cluster.run(
        "sbatch",
        "--parsable",
        "-D",
        str(tmp_path),
        "-o",
        str(tmp_path / "slurm-%j.log"),
        "--mem=100",
        "-t",
        "1",
        "--wrap",
        "echo hello > out.txt",
    )
    assert out.strip().isdigit(), out
    _wait_for_file(tmp_path / "out.txt", slurm_cluster)
    assert (tmp_path / "out.txt").read_text() == "hello\n"
    slurm_cluster.wait_for_jobs()


SNAKEFILE = """\
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    resources: mem_mb=100, runtime=5
    shell: "echo from-a > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    resources: mem_mb=100, runtime=5
    shell: "cat {input} > {output} && echo from-b >> {output}"
"""


def test_snakemake_runs_on_slurm(slurm_cluster: ClusterInfo, tmp_path):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(textwrap.dedent(SNAKEFILE))
    cmd = snakemake_slurm_command(slurm_cluster, snakefile, tmp_path, "--jobs", "2")
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=slurm_cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"{log}\n{slurm_cluster.logs_tail()}"
    assert (tmp_path / "a.txt").read_text() == "from-a\n", log
    assert (tmp_path / "b.txt").read_text() == "from-a\nfrom-b\n", log
    # both rules really went through SLURM: two batch jobs of this run, done
    jobs = slurm_cluster.run(
        "squeue", "--states=all", "-h", "-o", "%i|%T|%k"
    ).splitlines()
    done = [j for j in jobs if "|COMPLETED|rule_" in j]
    assert {j.rsplit("|", 1)[1] for j in done} >= {"rule_a", "rule_b"}, jobs
