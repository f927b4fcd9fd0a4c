"""Admin for jobs, bids, contracts and submissions: the operator console's contract story.

Statuses, amounts, fees, criteria and artifacts change only through `jobs.services`, whose edits belong to
the job's organization (operators are not members), so everything is read-only here. The contract's change
page tells its whole story (`selectors.contract_story`). The actions go through a confirmation page with a
note and call services that check the operator's role: expiring overdue jobs (`jobs_expire_by_operator`,
support) and ruling on a disputed result (`contract_dispute_resolve`, payments operator).
"""

from django.contrib import admin
from django.db.models import Count, Q

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT, operator_has_role
from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline, confirm_with_note, money_display

from . import selectors
from .models import Bid, Contract, Job, Submission
from .services import contracts as contract_services
from .services import jobs as job_services

# The admin index opens with the operator lists and their counts (jobs/templatetags/operator_console.py).
admin.site.index_template = "admin/operator_index.html"


class BidInline(ReadOnlyTabularInline):
    model = Bid
    fields = ("engineer", "amount_display", "estimated_days", "predicted_speedup", "status", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("job", "engineer")

    @admin.display(description="Amount")
    def amount_display(self, bid: Bid) -> str:
        return money_display(bid.amount, bid.job.currency)


class SubmissionInline(ReadOnlyTabularInline):
    model = Submission
    fields = ("number", "submitted_by", "status", "candidate", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("contract", "submitted_by", "candidate")


@admin.register(Job)
class JobAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "title",
        "organization",
        "status",
        "hardware_class",
        "visibility",
        "budget_display",
        "bid_count",
        "bidding_deadline",
        "published_at",
    )
    list_display_links = ("id", "title")
    list_filter = ("status", "hardware_class", "visibility", "currency", "bidding_deadline", "created_at")
    search_fields = ("=id", "title", "description", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    date_hierarchy = "created_at"
    readonly_fields = ("budget_display", "bid_count")
    field_displays = {"budget_min": "budget_display", "budget_max": "budget_display"}
    inlines = (BidInline,)
    actions = ("expire_overdue",)

    def get_queryset(self, request):
        active = Q(bids__status__in=Bid.ACTIVE_STATUSES)
        return super().get_queryset(request).annotate(bid_count=Count("bids", filter=active, distinct=True))

    @admin.display(description="Budget", ordering="budget_max")
    def budget_display(self, job: Job) -> str:
        return f"{money_display(job.budget_min, job.currency)} – {money_display(job.budget_max, job.currency)}"

    @admin.display(description="Active bids", ordering="bid_count")
    def bid_count(self, job: Job) -> int:
        return getattr(job, "bid_count", 0)

    def has_expire_permission(self, request) -> bool:
        return operator_has_role(user=request.user, role=SUPPORT)

    @confirm_with_note(
        description="Expire selected jobs that are past their award window",
        permissions=["expire"],
        consequence="Only open jobs past their award window expire; their pending bids are declined.",
    )
    def expire_overdue(self, request, queryset, *, note: str) -> str:
        expired = job_services.jobs_expire_by_operator(
            actor=request.user, job_ids=queryset.values_list("pk", flat=True)
        )
        return f"Expired {expired} job(s); the others are not overdue or not open."


@admin.register(Bid)
class BidAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "job",
        "engineer",
        "amount_display",
        "estimated_days",
        "predicted_speedup",
        "status",
        "created_at",
    )
    list_filter = ("status", "job__hardware_class", "job__currency", "created_at")
    search_fields = ("=id", "=job__id", "job__title", "engineer__email", "engineer__name")
    list_select_related = ("job", "engineer")
    date_hierarchy = "created_at"
    readonly_fields = ("amount_display",)
    field_displays = {"amount": "amount_display"}

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, bid: Bid) -> str:
        return money_display(bid.amount, bid.job.currency)


class ContractQueueFilter(admin.SimpleListFilter):
    """The contracts an operator has to look at."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return (("funding_overdue", "Awaiting funding too long"), ("disputed", "Disputed, awaiting a ruling"))

    def queryset(self, request, queryset):
        if self.value() == "funding_overdue":
            return queryset.filter(pk__in=selectors.contracts_awaiting_funding_overdue().values("pk"))
        if self.value() == "disputed":
            return queryset.filter(review_disputed=True)
        return queryset


@admin.register(Contract)
class ContractAdmin(ReadOnlyModelAdmin):
    change_form_template = "admin/jobs/contract/change_form.html"
    list_display = (
        "id",
        "job",
        "organization",
        "engineer",
        "amount_display",
        "platform_fee_display",
        "status",
        "attempts_display",
        "deadline",
        "created_at",
    )
    list_filter = (
        ContractQueueFilter,
        "status",
        "review_disputed",
        "currency",
        "job__hardware_class",
        "deadline",
        "created_at",
    )
    search_fields = ("=id", "=job__id", "job__title", "organization__name", "engineer__email")
    list_select_related = ("job", "organization", "engineer")
    date_hierarchy = "created_at"
    readonly_fields = ("amount_display", "platform_fee_display", "attempts_display")
    field_displays = {
        "amount": "amount_display",
        "platform_fee": "platform_fee_display",
        "submission_limit": "attempts_display",
        "submissions_used": "attempts_display",
    }
    inlines = (SubmissionInline,)
    actions = ("dispute_release", "dispute_withhold")

    def has_resolve_permission(self, request) -> bool:
        return operator_has_role(user=request.user, role=PAYMENTS_OPERATOR)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        if str(object_id).isdigit() and Contract.objects.filter(pk=object_id).exists():
            extra_context["story"] = selectors.contract_story(contract_id=int(object_id))
            extra_context["may_rule"] = self.has_resolve_permission(request)
        return super().change_view(request, object_id, form_url, extra_context)

    @confirm_with_note(
        description="Resolve the dispute: release the disputed result",
        permissions=["resolve"],
        consequence="The disputed result's payout is released to the engineer now.",
    )
    def dispute_release(self, request, queryset, *, note: str) -> str:
        return self._resolve(request, queryset, release=True, note=note)

    @confirm_with_note(
        description="Resolve the dispute: withhold the disputed result",
        permissions=["resolve"],
        consequence="The earning falls back to what was already paid out; the rest stays in escrow or is refunded.",
    )
    def dispute_withhold(self, request, queryset, *, note: str) -> str:
        return self._resolve(request, queryset, release=False, note=note)

    def _resolve(self, request, queryset, *, release: bool, note: str) -> str:
        resolved = 0
        for contract_id in queryset.filter(review_disputed=True).values_list("pk", flat=True):
            contract_services.contract_dispute_resolve(
                actor=request.user, contract_id=contract_id, release=release, note=note
            )
            resolved += 1
        return f"Resolved {resolved} dispute(s); the other contracts had none open."

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, contract: Contract) -> str:
        return money_display(contract.amount, contract.currency)

    @admin.display(description="Platform fee", ordering="platform_fee")
    def platform_fee_display(self, contract: Contract) -> str:
        return money_display(contract.platform_fee, contract.currency)

    @admin.display(description="Attempts used")
    def attempts_display(self, contract: Contract) -> str:
        return f"{contract.submissions_used} / {contract.submission_limit}"


@admin.register(Submission)
class SubmissionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "contract", "number", "submitted_by", "status", "candidate", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("=id", "=contract__id", "submitted_by__email", "candidate__sha256", "notes")
    list_select_related = ("contract", "submitted_by", "candidate")
    date_hierarchy = "created_at"


from . import admin_disputes  # noqa: E402,F401 - registers DisputeAdmin
