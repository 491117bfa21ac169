"""The test SLURM starts from any checkout, as a new user clones it: here one inside a
0700 directory that user munge cannot enter (like /root). A second throwaway SLURM on
other ports, beside the one the other SLURM tests use; it runs real packlab workers."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys

import pytest
from support import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PORT = "6917"  # the main test SLURM is on 6817/6818


def copy_checkout(dest: str) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".slurm")
    for part in ("scripts", "packlab"):
        shutil.copytree(os.path.join(REPO, part), os.path.join(dest, part), ignore=ignore)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the main test SLURM's settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLURM_CONF", "PACKLAB_TEST_SLURM") and not k.startswith("DASK_JOBQUEUE__")}
    return {**env, "PACKLAB_SLURM_PORT": PORT, **extra}


def sourced(env_file: str) -> dict[str, str]:
    with open(env_file) as f:
        return dict(re.findall(r"^export (\w+)=(.*)$", f.read(), flags=re.M))


@pytest.fixture
def private_checkout(tmp_path):
    if os.getuid() != 0:
        pytest.skip("scripts/slurm-up needs root")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    clone = str(private / "packlab")
    copy_checkout(clone)
    yield clone
    subprocess.run([os.path.join(clone, "scripts", "slurm-down")], env=clean_env(),
                   capture_output=True, timeout=120)


def test_slurm_up_from_a_checkout_in_a_0700_directory_runs_packlab_workers(private_checkout):
    up = subprocess.run([os.path.join(private_checkout, "scripts", "slurm-up")], env=clean_env(),
                        capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr
    env = {**clean_env(), **sourced(os.path.join(private_checkout, ".slurm", "env")),
           "PYTHONPATH": private_checkout}
    code = (
        "import warnings, packlab\n"
        "warnings.simplefilter('ignore')\n"
        "if __name__ == '__main__':\n"
        "    with packlab.launch(backend='slurm', workers=1, cores=1, memory='1GiB', wait=True) as pc:\n"
        "        print('FROM', packlab.__file__)\n"
        "        print('RESULT', pc.client.submit(sum, [1, 2]).result())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=private_checkout)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"FROM {private_checkout}" in run.stdout
    assert "RESULT 3" in run.stdout


def test_slurm_up_says_what_really_failed(private_checkout):
    # Its daemons' directory under the 0700 one: munge cannot reach it, and the message
    # says so (not "needs root and apt-get").
    inside = os.path.join(os.path.dirname(private_checkout), "daemons")
    up = subprocess.run([os.path.join(private_checkout, "scripts", "slurm-up")],
                        env=clean_env(PACKLAB_SLURM_DIR=inside), capture_output=True, text=True,
                        timeout=600)
    assert up.returncode != 0
    m = re.search(r"user munge cannot enter (\S+) \(drwx------ root\), on the way to its "
                  r"directory (\S+): make \1 searchable", up.stderr)
    assert m, up.stderr
    assert m[2] == os.path.join(inside, "munge") and inside.startswith(m[1] + "/")
    assert "apt-get" not in up.stderr
    # and it opened nothing on the way: the private directory is still 0700
    assert stat.S_IMODE(os.stat(os.path.dirname(private_checkout)).st_mode) == 0o700
