"""The job queue: admission, policies, retries and persistence in front of Dask.

``packlab.JobQueue`` owns the decision of what Dask runs and when; see
:mod:`packlab.queue.jobqueue` for what it guarantees.
"""

from .job import PRIORITIES, STATUSES, Job, JobFailed, JobTimeout
from .jobqueue import JobQueue
from .policies import FIFO, POLICIES, Deadline, FairShare, Policy, Priority, get_policy, register_policy
from .retry import CircuitBreaker, Retry, RetryBudget
from .store import Store

__all__ = [
    "FIFO",
    "POLICIES",
    "PRIORITIES",
    "STATUSES",
    "CircuitBreaker",
    "Deadline",
    "FairShare",
    "Job",
    "JobFailed",
    "JobQueue",
    "JobTimeout",
    "Policy",
    "Priority",
    "Retry",
    "RetryBudget",
    "Store",
    "get_policy",
    "register_policy",
]
