"""Datasets, training runs, model versions, traffic pools, evaluation sets (and the
guard's records, in guard.py)."""

from classifiers.models.audit import (  # noqa: F401, E402
    AuditDecision,
    LabelAudit,
    LabelAuditItem,
)
from classifiers.models.datasets import (  # noqa: F401
    Dataset,
    DatasetExample,
    GeneratorEndpoint,
    JailbreakTemplate,
)
from classifiers.models.evaluation import (  # noqa: F401
    EvaluationPrompt,
    EvaluationRun,
    EvaluationSet,
)
from classifiers.models.guard import (  # noqa: F401
    ApiToken,
    Conversation,
    FailureMode,
    GuardMode,
    GuardPolicy,
    Turn,
    Upstream,
)
from classifiers.models.jobs import Job, JobStatus  # noqa: F401
from classifiers.models.review import (  # noqa: F401
    Decision,
    FeedbackExample,
    ReviewItem,
    ReviewStatus,
)
from classifiers.models.traffic import TrafficPool, TrafficPrompt  # noqa: F401
from classifiers.models.training import (  # noqa: F401
    ActiveModel,
    CascadeCalibration,
    ModelVersion,
    TrainingRun,
)
