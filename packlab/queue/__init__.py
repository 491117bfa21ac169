"""The job queue: admission, policies, retries and persistence in front of Dask.

``packlab.JobQueue`` owns the decision of what Dask runs and when; see
:mod:`packlab.queue.jobqueue` for what it guarantees.
"""

from .events import Event, Subscription
from .job import Job, JobFailed, JobTimeout
from .jobqueue import JobQueue
from .jobstore import Store
from .policies import FIFO, POLICIES, Deadline, FairShare, Policy, Priority, get_policy, register_policy
from .retry import CircuitBreaker, Retry, RetryBudget
from .states import KINDS, PRIORITIES, STATUSES, Kind

__all__ = [
    "FIFO",
    "KINDS",
    "POLICIES",
    "PRIORITIES",
    "STATUSES",
    "CircuitBreaker",
    "Deadline",
    "Event",
    "FairShare",
    "Job",
    "JobFailed",
    "JobQueue",
    "JobTimeout",
    "Kind",
    "Policy",
    "Priority",
    "Retry",
    "RetryBudget",
    "Store",
    "Subscription",
    "get_policy",
    "register_policy",
]
