"""The problems the jobs API answers with, for production and sandbox jobs alike."""

from levqor_core import problems, tiers

IN_FLIGHT_RETRY_AFTER = "5"  # seconds; most workflows finish well within it


class InvalidJobInput(problems.BadRequest):
    slug, title = "invalid-job-input", "Invalid job input"


class UnknownWorkflow(problems.BadRequest):
    slug, title = "unknown-workflow", "Unknown workflow"


class JobNotCancelable(problems.Conflict):
    slug, title = "job-not-cancelable", "Job already finished"


class InvalidCursor(problems.BadRequest):
    slug, title = "invalid-cursor", "Invalid pagination cursor"


class TooManyJobsInFlight(problems.TooManyRequests):
    slug, title = "too-many-jobs-in-flight", "Too many jobs in flight"

    @classmethod
    def at_cap(cls, tier: tiers.Tier, where: str = "") -> "TooManyJobsInFlight":
        """The refusal of a job beyond the tier's cap; `where` names the kind of job ("sandbox ")."""
        cap = tier.max_jobs_in_flight
        return cls(
            f"This account already has {cap} {where}jobs queued or running, the {tier.label} tier's limit; "
            "wait for one to finish, or cancel one.",
            headers={"Retry-After": IN_FLIGHT_RETRY_AFTER},
            limit=cap,
        )
