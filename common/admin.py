"""Admin for the shared records, and the helpers every app's admin uses.

Rows that only services write (audit events, artifacts, stored idempotent answers) are shown read-only:
no add, no change, no delete. Amounts are shown through `Money`, never as raw minor units alone.
"""

import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import models
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from .errors import DomainError, NotPermitted
from .models import Artifact, AuditEvent, IdempotencyRecord
from .money import Money
from .services import operator_action_record


def model_field_names(model: type[models.Model]) -> list[str]:
    """Every concrete and many-to-many field, so that fields added later are covered (read-only) too."""
    opts = model._meta
    return [field.name for field in (*opts.fields, *opts.many_to_many)]


def money_display(amount: int | None, currency: str | None) -> str:
    if amount is None or not currency:
        return "—"
    return str(Money(amount, currency))


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


class OperatorNoteForm(forms.Form):
    note = forms.CharField(
        label="Note for the audit log",
        min_length=3,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Why you are doing this; recorded with your name on each selected row.",
    )


def confirm_with_note(*, description: str, permissions: list[str], consequence: str = ""):
    """An admin action that first shows a confirmation page asking for a note, and only then acts.

    Wraps ``fn(model_admin, request, queryset, *, note) -> str`` (the message shown afterwards). The
    action runs once the confirmation page is posted back with a valid note; each selected row then gets
    an ``operator_action`` audit event naming the operator, the action and the note. The service the
    action calls checks the operator's role itself: its ``NotPermitted`` becomes a 403, any other domain
    error a message on the list, and nothing is recorded for an action that did not happen.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def action(model_admin, request, queryset):
            form = OperatorNoteForm(request.POST if "confirm" in request.POST else None)
            if form.is_bound and form.is_valid():
                note = form.cleaned_data["note"]
                objects = list(queryset)
                try:
                    outcome = fn(model_admin, request, queryset, note=note)
                except NotPermitted as error:
                    raise PermissionDenied(str(error)) from error
                except DomainError as error:
                    model_admin.message_user(request, str(error), messages.ERROR)
                    return None
                operator_action_record(
                    actor=request.user, action=fn.__name__, objects=objects, note=note, outcome=outcome
                )
                model_admin.message_user(request, outcome)
                return None
            opts = model_admin.model._meta
            context = {
                **model_admin.admin_site.each_context(request),
                "title": description,
                "subtitle": None,
                "opts": opts,
                "app_label": opts.app_label,
                "action_name": fn.__name__,
                "action_description": description,
                "consequence": consequence,
                "objects": list(queryset[:100]),
                "object_count": queryset.count(),
                "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "select_across": request.POST.get("select_across", "0"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "form": form,
            }
            request.current_app = model_admin.admin_site.name
            return TemplateResponse(request, "admin/confirm_with_note.html", context)

        return admin.action(description=description, permissions=permissions)(action)

    return decorate


class NoAddDeleteMixin:
    """Rows that services create and never delete: the admin may not add or delete them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyMixin(NoAddDeleteMixin):
    """No add, change or delete from the admin; shared by the read-only model admins and inlines."""

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyModelAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Rows written only by services: viewable, never added, changed or deleted from the admin."""

    # Raw fields shown through a display instead, in their place, e.g. {"amount": "amount_display"}.
    field_displays: dict[str, str] = {}

    def get_fields(self, request, obj=None):
        fields: list[str] = []
        for name in super().get_fields(request, obj):
            name = self.field_displays.get(name, name)
            if name not in fields:
                fields.append(name)
        return fields

    def get_readonly_fields(self, request, obj=None):
        names = model_field_names(self.model)
        return [*names, *(name for name in self.readonly_fields if name not in names)]


class ReadOnlyTabularInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "created_at", "verb", "object_type", "object_id", "from_state", "to_state", "actor")
    list_filter = ("verb", "object_type", "to_state", "created_at")
    search_fields = ("=object_id", "verb", "actor__email")
    list_select_related = ("actor",)
    date_hierarchy = "created_at"
    readonly_fields = ("object_link",)
    show_full_result_count = False

    @admin.display(description="Object")
    def object_link(self, event: AuditEvent) -> str:
        try:
            url = reverse(f"admin:{event.object_type.replace('.', '_')}_change", args=[event.object_id])
        except NoReverseMatch:
            return f"{event.object_type}:{event.object_id}"
        return format_html('<a href="{}">{}:{}</a>', url, event.object_type, event.object_id)


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyModelAdmin):
    list_display = ("short_sha256", "size_display", "archive_format", "created_at")
    list_filter = ("archive_format", "created_at")
    search_fields = ("sha256",)
    readonly_fields = ("size_display",)
    date_hierarchy = "created_at"

    @admin.display(description="sha256", ordering="sha256")
    def short_sha256(self, artifact: Artifact) -> str:
        return f"{artifact.sha256[:16]}…"

    @admin.display(description="Size", ordering="size")
    def size_display(self, artifact: Artifact) -> str:
        return human_size(artifact.size)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "created_at", "user", "endpoint", "key", "response_status")
    list_filter = ("response_status", "created_at")
    search_fields = ("key", "endpoint", "user__email")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
