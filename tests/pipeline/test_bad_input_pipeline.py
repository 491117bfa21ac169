"""Bad input to pipelines: each case raises a PacklabError naming what is wrong and how to
fix it, before anything runs (no checkpoint directory, no queue store, no stage called)."""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest
from support import small_cluster

import packlab
from packlab.errors import PacklabError

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CALLED: list[str] = []


@pytest.fixture(scope="module")
def cluster():
    with small_cluster() as pc:
        yield pc


def pipeline(tmp, name="bad"):
    return packlab.Pipeline(name, checkpoint=os.path.join(tmp, "ckpt"))


def cycle(tmp):
    p = pipeline(tmp)

    @p.stage
    def a(c):
        CALLED.append("a")

    @p.stage
    def b(a):
        CALLED.append("b")

    @p.stage
    def c(b):
        CALLED.append("c")

    @p.stage
    def free():
        CALLED.append("free")

    return p


def self_loop(tmp):
    p = pipeline(tmp)

    @p.stage(depends_on="solo")
    def solo():
        CALLED.append("solo")

    return p


def unknown_dependency(tmp):
    p = pipeline(tmp)

    @p.stage(depends_on=["lode"])
    def clean():
        CALLED.append("clean")

    return p


def parameter_names_no_stage(tmp):
    p = pipeline(tmp)

    @p.stage
    def load():
        CALLED.append("load")

    @p.stage
    def clean(lod):
        CALLED.append("clean")

    return p


def map_over_not_iterable(tmp):
    p = pipeline(tmp)

    @p.stage(map_over="n")
    def each(n=5):
        CALLED.append("each")

    return p


def map_over_a_string(tmp):
    p = pipeline(tmp)

    @p.stage(map_over="files")
    def each(files="a.csv"):
        CALLED.append("each")

    return p


def map_over_names_no_parameter(tmp):
    p = pipeline(tmp)

    @p.stage
    def load():
        return [1]

    @p.stage(map_over="rows")
    def each(load):
        CALLED.append("each")

    return p


def star_args(tmp):
    p = pipeline(tmp)

    @p.stage
    def each(*inputs):
        CALLED.append("each")

    return p


def unpicklable_constant(tmp):
    import threading

    p = pipeline(tmp)
    lock = threading.Lock()

    @p.stage
    def guarded(lock=lock):
        CALLED.append("guarded")

    return p


def empty(tmp):
    return pipeline(tmp)


def one_stage(tmp, name="bad", checkpoint=None):
    p = packlab.Pipeline(name, checkpoint=checkpoint or os.path.join(tmp, "ckpt"))

    @p.stage
    def one():
        CALLED.append("one")

    return p


# (id, how the pipeline is built and run, fragments the message must contain)
RUN_CASES = [
    ("cycle", cycle, ["cycle", "a -> b -> c -> a", "Remove one"]),
    ("self-dependency", self_loop, ["cycle", "solo -> solo"]),
    ("unknown-dependency", unknown_dependency, ["'clean' depends on 'lode'", "not a stage"]),
    ("parameter-names-no-stage", parameter_names_no_stage,
     ["parameter 'lod' names no stage", "did you mean 'load'", "default"]),
    ("map-over-not-iterable", map_over_not_iterable, ["map_over='n' is 5", "builtins.int", "not iterable"]),
    ("map-over-a-string", map_over_a_string, ["map_over='files'", "builtins.str", "not iterable"]),
    ("map-over-no-parameter", map_over_names_no_parameter,
     ["map_over='rows'", "a parameter of stage 'each'"]),
    ("star-args", star_args, ["*inputs", "name each input"]),
    ("no-stages", empty, ["has no stages", "@pipe.stage"]),
    ("unpicklable-constant", unpicklable_constant, ["stage 'guarded'", "the function", "_thread.lock",
                                                    "cannot be pickled"]),
]


@pytest.mark.parametrize(("build", "fragments"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_bad_graph_is_refused_before_anything_runs(cluster, tmp_path, build, fragments):
    CALLED.clear()
    pipe = build(str(tmp_path))
    with pytest.raises(PacklabError) as e:
        pipe.run(cluster)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    assert CALLED == [] and not (tmp_path / "ckpt").exists()


def test_unwritable_checkpoint_directory_is_refused_before_anything_runs(cluster, tmp_path):
    (tmp_path / "a-file").write_text("x")
    CALLED.clear()
    pipe = one_stage(str(tmp_path), checkpoint=str(tmp_path / "a-file" / "ckpt"))
    with pytest.raises(PacklabError, match=r"checkpoint=.*a-file/ckpt.*not a directory.*(?i:give) another"):
        pipe.run(cluster)
    ro = "/proc/packlab-ckpt"
    with pytest.raises(PacklabError, match="checkpoint='/proc/packlab-ckpt'"):
        one_stage(str(tmp_path), checkpoint=ro).run(cluster)
    assert CALLED == []


def test_a_checkpoint_directory_that_is_a_symlink_is_refused(cluster, tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(PacklabError, match="checkpoint"):
        one_stage(str(tmp_path), checkpoint=str(tmp_path / "link")).run(cluster)


def _declare(tmp, **options):
    p = pipeline(tmp)
    return p.stage(**options)(lambda: None)


# (id, call(tmp), fragments): refused at declaration, before any run
DECLARE_CASES = [
    ("duplicate-name", lambda t: _dup(t), ["already has a stage named 'one'", "unique", "name="]),
    ("bad-priority", lambda t: _declare(t, name="s", priority="urgent"),
     ["priority='urgent'", "'high', 'normal', 'low'"]),
    ("negative-timeout", lambda t: _declare(t, name="s", timeout=-1), ["timeout=-1"]),
    ("bad-retry", lambda t: _declare(t, name="s", retry="often"), ["retry='often'", "Retry"]),
    ("bad-resources", lambda t: _declare(t, name="s", resources={"GPU": -1}), ["GPU", "-1"]),
    ("zero-resources", lambda t: _declare(t, name="s", resources={"GPU": 0}),
     ["resources['GPU']=0", "above 0"]),
    ("resources-not-a-dict", lambda t: _declare(t, name="s", resources=["GPU"]),
     ["resources=['GPU']", "dict"]),
    ("map-over-not-a-name", lambda t: _declare(t, name="s", map_over=3),
     ["map_over=3", "name of a parameter"]),
    ("depends-on-a-number", lambda t: _declare(t, name="s", depends_on=5), ["depends_on=5", "stage name"]),
    ("stage-name-with-slash", lambda t: _declare(t, name="a/b"), ["name='a/b'", "letters, digits"]),
    ("stage-not-callable", lambda t: pipeline(t).stage(42), ["stage=42", "a function"]),
    ("pipeline-name", lambda t: packlab.Pipeline("my pipeline", checkpoint=t), ["name='my pipeline'"]),
    ("pipeline-name-with-dot", lambda t: packlab.Pipeline("etl.v2", checkpoint=t),
     ["name='etl.v2'", "'_' or '-'"]),
    ("checkpoint-not-a-path", lambda t: packlab.Pipeline("p", checkpoint=3), ["checkpoint=3", "file path"]),
    ("pipeline-retry", lambda t: packlab.Pipeline("p", checkpoint=t, retry=-2), ["attempts=-2"]),
    ("resume-not-a-bool", lambda t: one_stage(t).run(None, resume="yes"), ["resume='yes'", "True or False"]),
    ("run-on-nothing", lambda t: one_stage(t).run(42), ["cluster_or_queue=42", "PackCluster"]),
    ("png-without-browser", lambda t: one_stage(t).visualize(filename=os.path.join(t, "d.png")),
     ["PNG export needs a browser", ".svg"]),
    ("unknown-stage-in-run", lambda t: packlab.pipeline.PipelineRun("p", None, {})["nope"],
     ["no stage 'nope'"]),
]


def _dup(t):
    p = one_stage(t)

    @p.stage
    def one():
        return 2


@pytest.mark.parametrize(("call", "fragments"), [c[1:] for c in DECLARE_CASES],
                         ids=[c[0] for c in DECLARE_CASES])
def test_bad_stage_options_are_refused_at_declaration(tmp_path, call, fragments):
    CALLED.clear()
    with pytest.raises(PacklabError) as e:
        call(str(tmp_path))
    for f in fragments:
        assert f in str(e.value), str(e.value)
    assert CALLED == [] and not (tmp_path / "ckpt").exists()


def test_an_unserialisable_output_names_the_stage_and_the_type(cluster, tmp_path):
    """The one case only running can reveal: it fails that stage (at once, no retry)."""
    pipe = pipeline(str(tmp_path))

    @pipe.stage(retry=3)
    def handle():
        return (i for i in range(3))

    run = pipe.run(cluster)
    assert run.failed == ["handle"] and run["handle"].attempts == 1
    assert "stage 'handle' returned a builtins.generator, which cannot be checkpointed" in run["handle"].error
