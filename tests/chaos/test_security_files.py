"""Security promises about files, broken on purpose: after a real run (a TLS cluster, a
queue with a store, a pipeline with in-stage state) no file
holding a key, a token or user data is readable by others and no log holds a secret; and
symbolic links planted where packlab creates its stores, checkpoints, registry entries and
TLS files are never followed (each target: a file of the test's elsewhere, which must not
change, and a path that must not come to exist).

Listeners and TLS: test_security.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import cloudpickle
import pytest

import packlab
from packlab.clusters import registry
from packlab.pipeline.checkpoints import CheckpointStore

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stages run on the workers
USER_DATA = "user-data-7f3a"  # in every job's and stage's data: found only where it may be
PEM_KEY = b"PRIVATE KEY-----"


def readable_by_others(path: Path, root: Path) -> str | None:
    """Who besides the owner can read ``path`` (a file under ``root``): "group",
    "others", or None. A class reads it when the file grants it read and every directory
    from ``root`` down grants it search (``root``'s own parents are taken as open: the
    test's tmp dir is private, a user's project directory may not be)."""
    who = []
    for cls, r, x in (("group", stat.S_IRGRP, stat.S_IXGRP), ("others", stat.S_IROTH, stat.S_IXOTH)):
        if not os.lstat(path).st_mode & r:
            continue
        d, reachable = path.parent, True
        while reachable:
            reachable = bool(os.lstat(d).st_mode & x)
            if d == root or d == d.parent:
                break
            d = d.parent
        if reachable:
            who.append(cls)
    return " and ".join(who) or None


def tree(root: Path) -> list[Path]:
    """Every file and link under ``root`` (not following links)."""
    out = []
    for d, dirs, files in os.walk(root):
        out += [Path(d, f) for f in files] + [Path(d, x) for x in dirs if os.path.islink(os.path.join(d, x))]
    return out


def digest(path: Path) -> str:
    """A digest of a file, or of every file of a directory (names and bytes)."""
    h = hashlib.sha256()
    for p in sorted(tree(path)) if path.is_dir() else [path]:
        h.update(str(p.relative_to(path.parent)).encode() + p.read_bytes())
    return h.hexdigest()


def _shout(x):
    logging.getLogger("distributed.worker").info("job %s", x)  # a user's own log line, in Dask's logs
    return {"owner": "ann", "payload": f"{USER_DATA}-{x}"}


class Keep(logging.Handler):
    """Every record this process logs during the run (all levels packlab lets through)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def the_pipeline(root: Path) -> packlab.Pipeline:
    pipe = packlab.Pipeline("sec", checkpoint=str(root))

    @pipe.stage
    def load():
        return [f"{USER_DATA}-{i}" for i in range(3)]

    @pipe.stage(map_over="load")
    def train(load, ctx):
        state = ctx.load({"seen": []})
        state["seen"].append(load)
        ctx.save(state)  # in-stage state: user data too
        return state

    return pipe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real run in a throwaway HOME, as a user's day leaves it; its files and logs."""
    home = tmp_path_factory.mktemp("home")
    work = home / "project"
    work.mkdir(mode=0o755)  # a project directory others may enter: the store must guard itself
    os.chmod(work, 0o755)
    keep = Keep()
    root = logging.getLogger()
    old_umask = os.umask(0o022)  # the usual umask: files are 0644 unless packlab says otherwise
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        root.addHandler(keep)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", packlab.PacklabWarning)
                pc = packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, name="files")
            with pc:
                store = work / "q.db"
                with packlab.JobQueue(pc, store=str(store)) as q:
                    assert [j.result(timeout=60)["payload"] for j in q.map(_shout, range(3))] == [
                        f"{USER_DATA}-{i}" for i in range(3)]
                result = the_pipeline(work / "ckpt").run(pc)
                assert not result.failed, result.report()
                # while the cluster runs: its registry entry and client certificates exist
                packlab_dir = sorted(tree(home / ".packlab"))
                assert any(p.name == "key.pem" for p in packlab_dir), packlab_dir
                snapshot = {p: (p.read_bytes(), readable_by_others(p, home / ".packlab"))
                            for p in packlab_dir}
                logs = [msg for _, msg in pc.client.get_scheduler_logs(n=10_000)]
                for per_worker in (pc.client.get_worker_logs(n=10_000),
                                   pc.client.get_worker_logs(n=10_000, nanny=True)):
                    logs += [msg for msgs in per_worker.values() for _, msg in msgs]
                assert any("job 1" in m for m in logs)  # the worker's own log was read
        finally:
            root.removeHandler(keep)
            os.umask(old_umask)
    yield {"home": home, "work": work, "store": store, "snapshot": snapshot, "logs": logs + keep.lines}


# -- no secret in files others can read, nor in logs -------------------------------------
def test_no_key_token_or_user_data_in_a_file_others_can_read(run):
    home, work = run["home"], run["work"]
    # ~/.packlab as it was while the cluster ran (its TLS files go with it), and now
    seen = dict(run["snapshot"])
    seen |= {p: (p.read_bytes(), readable_by_others(p, home / ".packlab")) for p in tree(home / ".packlab")}
    ckpt = work / "ckpt"
    seen |= {p: (p.read_bytes(), readable_by_others(p, ckpt)) for p in tree(ckpt)}
    # the store and its side files sit in an open project directory: each guards itself
    seen |= {p: (p.read_bytes(), readable_by_others(p, work)) for p in work.glob("q.db*")}
    slurm = home / ".packlab" / "slurm"  # SLURM's shared directory, where a SLURM cluster ran
    assert not slurm.exists() or stat.S_IMODE(slurm.stat().st_mode) == 0o700
    kinds = {"key": [p for p, (b, _) in seen.items() if PEM_KEY in b],
             "user data": [p for p, (b, _) in seen.items() if USER_DATA.encode() in b]}
    # the walk found what it guards: keys, and user data in the store and the checkpoints
    assert kinds["key"] and any(p.name.startswith("q.db") for p in kinds["user data"]), kinds
    assert any(ckpt / "outputs" in p.parents for p in kinds["user data"]), kinds
    exposed = {str(p): who for p, (_, who) in seen.items() if who}
    assert exposed == {}, exposed


def test_no_private_key_in_any_log(run):
    # (the dashboard's token in its logs and files: test_security.py, off-loopback test)
    logs = run["logs"]
    assert len(logs) > 20, logs  # Dask's scheduler, worker and nanny logs and ours were read
    assert [line for line in logs if "PRIVATE KEY" in line] == []


# -- planted symbolic links are never followed ------------------------------------------------
class Target:
    """Where a planted link points: a file (or directory) of the test's elsewhere, which
    must not change, or a path that must not come to exist."""

    def __init__(self, elsewhere: Path, kind: str):
        self.path = elsewhere / ("never-created" if kind == "nowhere" else "precious")
        if kind == "file":
            self.path.write_bytes(pickle.dumps({"seen": ["planted"]}))  # a pickle: never to be loaded
        elif kind == "directory":
            self.path.mkdir()
            (self.path / "thesis.tex").write_text("years of work")
        self.remember()

    def remember(self) -> None:
        self.before = digest(self.path) if os.path.lexists(self.path) else None

    def untouched(self) -> None:
        if self.before is None:
            assert not os.path.lexists(self.path), f"{self.path} was created through the link"
        else:
            assert digest(self.path) == self.before, f"{self.path} changed through the link"
        assert os.listdir(self.path.parent) == ([self.path.name] if self.before else [])


@pytest.fixture(params=["file", "nowhere"])
def target(request, tmp_path):
    """A file-shaped target: a file of ours elsewhere, or nowhere."""
    (tmp_path / "elsewhere").mkdir()
    return Target(tmp_path / "elsewhere", request.param)


@pytest.fixture(params=["directory", "nowhere"])
def dir_target(request, tmp_path):
    """A directory-shaped target: a directory of ours elsewhere, or nowhere."""
    (tmp_path / "elsewhere").mkdir()
    return Target(tmp_path / "elsewhere", request.param)


@pytest.mark.parametrize("side", ["", "-wal", "-shm"])
def test_a_telemetry_store_never_follows_a_planted_link(tmp_path, target, side):
    store = tmp_path / "tel.db"
    if side:
        from packlab.telemetry.tables import Writer

        Writer(str(store), flush_interval=0.01).close()  # a real store, then the link beside it
        for s in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{store}{s}")
    os.symlink(target.path, f"{store}{side}")
    with pytest.raises(packlab.PacklabError, match="symbolic link"):
        packlab.launch(workers=0, cores=1, memory="1GiB", store=str(store))
    target.untouched()


@pytest.fixture(scope="module")
def cluster():
    """One in-process TLS worker: the stages' files are what matters here, not processes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=1, cores=2, memory="1GiB", wait=True, processes=False)
    with pc:
        yield pc


def _replace_with_link(link: Path, target: Target) -> None:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    elif os.path.lexists(link):
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.path, link)


def test_the_pipelines_queue_store_never_follows_a_planted_link(cluster, tmp_path, target):
    root = tmp_path / "ckpt"
    root.mkdir(mode=0o700)
    os.symlink(target.path, root / "queue.db")
    with pytest.raises(packlab.PacklabError, match="symbolic link"):
        the_pipeline(root).run(cluster)
    target.untouched()


def test_a_checkpoint_planted_as_a_link_is_recomputed_never_read(cluster, tmp_path, dir_target):
    root = tmp_path / "ckpt"
    pipe = the_pipeline(root)
    assert not pipe.run(cluster).failed
    key = pipe.keys()["load"]
    if dir_target.before is not None:  # the link points at a whole, valid checkpoint of other data
        shutil.rmtree(dir_target.path)
        other = tmp_path / "other"
        CheckpointStore(str(other), "sec").write("load", key, ["planted"])
        os.rename(other / "outputs" / "load" / key, dir_target.path)
        dir_target.remember()
    _replace_with_link(root / "outputs" / "load" / key, dir_target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PipelineWarning: the checkpoint is not usable
        again = pipe.run(cluster)
    assert again["load"].status == "done" and again["load"].invalid, again.report()
    assert "symbolic link" in again["load"].invalid[0]
    assert again["load"].result == [f"{USER_DATA}-{i}" for i in range(3)]  # its own, not the planted
    assert not (root / "outputs" / "load" / key).is_symlink()
    dir_target.untouched()


def test_in_stage_state_planted_as_a_link_is_never_loaded(cluster, tmp_path, target):
    root = tmp_path / "ckpt"
    pipe = the_pipeline(root)
    assert not pipe.run(cluster).failed
    _replace_with_link(root / "ctx" / "train" / f"{pipe.keys()['train']}-0.pkl", target)
    again = pipe.run(cluster, resume=False)
    assert not again.failed, again.report()
    assert [s["seen"] for s in again["train"].result] == [[f"{USER_DATA}-{i}"] for i in range(3)]
    assert again["train"].resumed == 0
    target.untouched()


@pytest.mark.parametrize("where", ["ctx/train", "outputs/train", "tmp"])
def test_checkpoint_directories_planted_as_links_are_refused(cluster, tmp_path, dir_target, where):
    root = tmp_path / "ckpt"
    pipe = the_pipeline(root)
    assert not pipe.run(cluster).failed
    _replace_with_link(root / where, dir_target)
    again = pipe.run(cluster, resume=False)
    errors = [s.error for s in again.stages.values() if s.status == "failed"]  # refused at once, not retried
    assert errors and all("CheckpointRefused" in e and "symbolic link" in e for e in errors), again.report()
    assert all(s.attempts <= s.units for s in again.stages.values()), again.report()  # one each
    dir_target.untouched()
    removed = pipe.clean()  # and cleaning up never reaches through it either
    dir_target.untouched()
    assert str(root / where) in removed or where == "tmp"


# -- the registry and its TLS files ---------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    """A throwaway HOME: the registry is ~/.packlab."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("where", ["entry", "ca.pem", "cert.pem", "key.pem", "recent stores"])
def test_registry_and_tls_files_never_follow_a_planted_link(home, tmp_path, target, where):
    d = Path(registry.directory())
    link = {"entry": d / "planted.json", "recent stores": home / ".packlab" / "stores.json"}.get(
        where, d / "planted.tls" / where)
    link.parent.mkdir(mode=0o700, exist_ok=True)
    os.symlink(target.path, link)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=0, cores=1, memory="1GiB", name="planted")
    with pc:
        store = str(tmp_path / "q.db")
        with packlab.JobQueue(pc, store=store):
            pass
        assert [e.name for e in registry.entries()] == ["planted"]
        assert registry.recent_stores()[0]["path"] == store
        client = packlab.connect("planted")  # through the files it wrote in place of the links
        client.close()
        for f in tree(home / ".packlab"):
            assert not f.is_symlink(), f
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    target.untouched()


def test_a_dead_entrys_tls_directory_planted_as_a_link_is_removed_not_emptied(home, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    d = Path(registry.directory())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    entry = {"name": "gone", "backend": "local", "scheduler": "tls://127.0.0.1:1", "dashboard": None,
             "tls": None, "pid": int(dead.stdout), "host": os.uname().nodename, "started": 0.0}
    fd = os.open(d / "gone.json", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(entry).encode())
    os.close(fd)
    os.symlink(victim, d / "gone.tls")
    assert registry.entries() == []  # the dead entry is removed on the way
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert sorted(os.listdir(d)) == []
