"""Users and what hangs off them one-to-one: notification preferences,
onboarding progress and per-user feature-flag overrides."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class NotificationType(StrEnum):
    AGENT_RUN = "AGENT_RUN"
    ZERO_BALANCE = "ZERO_BALANCE"
    LOW_BALANCE = "LOW_BALANCE"
    BLOCK_EXECUTION_FAILED = "BLOCK_EXECUTION_FAILED"
    CONTINUOUS_AGENT_ERROR = "CONTINUOUS_AGENT_ERROR"
    DAILY_SUMMARY = "DAILY_SUMMARY"
    WEEKLY_SUMMARY = "WEEKLY_SUMMARY"
    MONTHLY_SUMMARY = "MONTHLY_SUMMARY"
    REFUND_REQUEST = "REFUND_REQUEST"
    REFUND_PROCESSED = "REFUND_PROCESSED"
    AUTO_TOP_UP_FAILED = "AUTO_TOP_UP_FAILED"
    DISPUTE_OPENED = "DISPUTE_OPENED"


class OnboardingStep(StrEnum):
    WELCOME = "WELCOME"
    USAGE_REASON = "USAGE_REASON"
    INTEGRATIONS = "INTEGRATIONS"
    AGENT_CHOICE = "AGENT_CHOICE"
    AGENT_NEW_RUN = "AGENT_NEW_RUN"
    AGENT_INPUT = "AGENT_INPUT"
    CONGRATS = "CONGRATS"
    GET_RESULTS = "GET_RESULTS"
    MARKETPLACE_VISIT = "MARKETPLACE_VISIT"
    MARKETPLACE_ADD_AGENT = "MARKETPLACE_ADD_AGENT"
    MARKETPLACE_RUN_AGENT = "MARKETPLACE_RUN_AGENT"
    BUILDER_OPEN = "BUILDER_OPEN"
    BUILDER_SAVE_AGENT = "BUILDER_SAVE_AGENT"
    BUILDER_RUN_AGENT = "BUILDER_RUN_AGENT"
    SCHEDULE_AGENT = "SCHEDULE_AGENT"
    RE_RUN_AGENT = "RE_RUN_AGENT"
    RUN_AGENTS = "RUN_AGENTS"


class User(Model):
    # The JWT `sub`: users are created on first sight of a valid token.
    id = fields.UUIDField(primary_key=True)
    email = fields.CharField(max_length=320)
    name = fields.CharField(max_length=200, null=True)
    timezone = fields.CharField(max_length=64, default="UTC")
    stripe_customer_id = fields.CharField(max_length=255, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "users"
        indexes = [("email",)]


class NotificationPreferences(Model):
    user = fields.OneToOneField(
        "models.User",
        related_name="notification_preferences",
        primary_key=True,
        on_delete=fields.CASCADE,
    )
    # NotificationType name -> enabled; a type that is absent counts as enabled.
    settings: dict[str, bool] = fields.JSONField(default=dict)
    daily_limit = fields.IntField(default=10)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "notification_preferences"


class UserOnboarding(Model):
    user = fields.OneToOneField(
        "models.User", related_name="onboarding", primary_key=True, on_delete=fields.CASCADE
    )
    completed_steps: list[str] = fields.JSONField(default=list)
    # Steps whose reward was granted; survives resetOnboarding so rewards come once.
    rewarded_for: list[str] = fields.JSONField(default=list)
    usage_reason = fields.CharField(max_length=500, null=True)
    integrations: list[str] = fields.JSONField(default=list)
    other_integrations = fields.CharField(max_length=500, null=True)
    selected_store_listing_version_id = fields.UUIDField(null=True)
    agent_input = fields.JSONField(null=True)
    onboarding_agent_execution_id = fields.UUIDField(null=True)
    agent_runs = fields.IntField(default=0)
    # Graphs the user has run at least once, for RE_RUN_AGENT.
    run_graph_ids: list[str] = fields.JSONField(default=list)
    updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "user_onboarding"


class FeatureFlagOverride(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="feature_flags", on_delete=fields.CASCADE
    )
    flag = fields.CharField(max_length=64)
    enabled = fields.BooleanField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "feature_flag_overrides"
        unique_together = (("user", "flag"),)
