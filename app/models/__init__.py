"""Tortoise models, one module per domain. Tortoise discovers them from here."""

from app.models.admin import AdminAction, AdminAuditEntry
from app.models.api_keys import ApiKey, ApiKeyPermission, ApiKeyStatus
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
from app.models.notifications import EmailStatus, Notification
from app.models.schedules import Schedule
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
    Link,
    Node,
    NodeExecution,
    Notification,
    NotificationPreferences,
    ProcessedStripeEvent,
    RefundRequest,
    Schedule,
    StoreListing,
    StoreListingVersion,
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
    "CreditReservation",
    "CreditTransaction",
    "CreditTransactionType",
    "Dispute",
    "DisputeDecision",
    "EmailStatus",
    "Execution",
    "ExecutionStatus",
    "FeatureFlagOverride",
    "Graph",
    "GraphSource",
    "LibraryAgent",
    "Link",
    "Node",
    "NodeExecution",
    "Notification",
    "NotificationPreferences",
    "NotificationType",
    "OnboardingStep",
    "ProcessedStripeEvent",
    "RefundRequest",
    "RefundRequestStatus",
    "Schedule",
    "StoreListing",
    "StoreListingVersion",
    "UploadedFile",
    "User",
    "UserBalance",
    "UserOnboarding",
]
