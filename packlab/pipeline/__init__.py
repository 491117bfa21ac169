"""DAG pipelines whose stages checkpoint atomically and resume after any crash.

``packlab.Pipeline`` declares stages (:mod:`.pipeline`), checks the graph
(:mod:`.dag`), keys each output by code, constants and upstream keys (:mod:`.keys`),
writes and verifies checkpoints (:mod:`.checkpoints`, formats in :mod:`.formats`), lets a
long stage save its own state (:mod:`.context`) and runs the stages through a
:class:`packlab.JobQueue` (:mod:`.execute`), reporting a :class:`PipelineRun` (:mod:`.run`).
"""

from .checkpoints import CheckpointInvalid, CheckpointRefused, CheckpointStore, OutputNotSerializable
from .context import Context
from .execute import PipelineWarning
from .formats import FORMATS, Format, register_format, unregister_format
from .pipeline import Pipeline
from .run import PipelineRun, StageResult
from .worker import stage_of_job

__all__ = [
    "FORMATS",
    "CheckpointInvalid",
    "CheckpointRefused",
    "CheckpointStore",
    "Context",
    "Format",
    "OutputNotSerializable",
    "Pipeline",
    "PipelineRun",
    "PipelineWarning",
    "StageResult",
    "register_format",
    "stage_of_job",
    "unregister_format",
]
