"""Tortoise models, one module per domain. Tortoise discovers them from here."""

from app.models.admin import AdminAction, AdminAuditEntry
from app.models.api_keys import ApiKey, ApiKeyPermission, ApiKeyStatus
from app.models.credentials import CredentialsType, StoredCredentials
from app.models.credits import (
    AutoTopUpConfig,
    CreditReservation,
    CreditTransaction,
    CreditTransactionType,
    Dispute,
    DisputeDecision,
    ProcessedStripeEvent,
    RefundRequest,
    RefundRequestStatus,
    UserBalance,
)
from app.models.executions import (
    TERMINAL_STATUSES,
    Execution,
    ExecutionStatus,
    GraphSource,
    NodeExecution,
)
from app.models.files import UploadedFile
from app.models.graphs import Graph, LibraryAgent, Link, Node, StoreListing, StoreListingVersion
from app.models.library import LibraryGrant, StoreReview
from app.models.notifications import EmailStatus, Notification
from app.models.presets import Preset
from app.models.reviews import NodeReview, NodeReviewKind, NodeReviewStatus
from app.models.schedules import FiringOutcome, Schedule, ScheduleFiring
from app.models.triggers import Trigger, TriggerDelivery, TriggerDeliveryStatus
from app.models.users import (
    FeatureFlagOverride,
    NotificationPreferences,
    NotificationType,
    OnboardingStep,
    User,
    UserOnboarding,
)

__models__ = [
    AdminAuditEntry,
    ApiKey,
    AutoTopUpConfig,
    CreditReservation,
    CreditTransaction,
    Dispute,
    Execution,
    FeatureFlagOverride,
    Graph,
    LibraryAgent,
    LibraryGrant,
    Link,
    Node,
    NodeExecution,
    NodeReview,
    Notification,
    NotificationPreferences,
    Preset,
    ProcessedStripeEvent,
    RefundRequest,
    Schedule,
    ScheduleFiring,
    StoredCredentials,
    StoreListing,
    StoreListingVersion,
    StoreReview,
    Trigger,
    TriggerDelivery,
    UploadedFile,
    User,
    UserBalance,
    UserOnboarding,
]

__all__ = [
    "TERMINAL_STATUSES",
    "AdminAction",
    "AdminAuditEntry",
    "ApiKey",
    "ApiKeyPermission",
    "ApiKeyStatus",
    "AutoTopUpConfig",
    "CredentialsType",
    "CreditReservation",
    "CreditTransaction",
    "CreditTransactionType",
    "Dispute",
    "DisputeDecision",
    "EmailStatus",
    "Execution",
    "ExecutionStatus",
    "FeatureFlagOverride",
    "FiringOutcome",
    "Graph",
    "GraphSource",
    "LibraryAgent",
    "LibraryGrant",
    "Link",
    "Node",
    "NodeExecution",
    "NodeReview",
    "NodeReviewKind",
    "NodeReviewStatus",
    "Notification",
    "NotificationPreferences",
    "NotificationType",
    "OnboardingStep",
    "Preset",
    "ProcessedStripeEvent",
    "RefundRequest",
    "RefundRequestStatus",
    "Schedule",
    "ScheduleFiring",
    "StoreListing",
    "StoreListingVersion",
    "StoreReview",
    "StoredCredentials",
    "Trigger",
    "TriggerDelivery",
    "TriggerDeliveryStatus",
    "UploadedFile",
    "User",
    "UserBalance",
    "UserOnboarding",
]
