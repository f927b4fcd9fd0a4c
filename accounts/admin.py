"""Admin for users, organizations, memberships, engineer profiles and API tokens.

Memberships change only through the audited membership services (by the organization's owners and admins),
so they are read-only here; a token's hash is never shown, only its prefix; revoking goes through the service.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import Count, Q
from django.utils import timezone

from common.admin import NoAddDeleteMixin, ReadOnlyModelAdmin, ReadOnlyTabularInline, model_field_names
from common.errors import DomainError

from .models import ApiToken, EngineerProfile, Membership, Organization, User
from .services import api_token_revoke, engineer_profile_update


class UserCreateForm(AdminUserCreationForm):
    """Operator accounts only: companies and engineers sign up (which creates their organization or profile)."""

    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("email", "name", "account_type")
        field_classes: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account_type"].choices = [(User.AccountType.OPERATOR, User.AccountType.OPERATOR.label)]
        self.fields["account_type"].initial = User.AccountType.OPERATOR

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email


class UserEditForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User
        fields = "__all__"
        field_classes: dict = {}


class MembershipInline(ReadOnlyTabularInline):
    model = Membership
    fk_name = "user"
    fields = ("organization", "role", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization", "user")


class OrganizationMembershipInline(MembershipInline):
    fk_name = "organization"
    fields = ("user", "role", "created_at")
    readonly_fields = fields


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreateForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name", "account_type")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "name", "account_type", "usable_password", "password1", "password2"),
            },
        ),
    )
    list_display = ("email", "name", "account_type", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("account_type", "is_active", "is_staff", "is_superuser", "date_joined")
    search_fields = ("email", "name")
    ordering = ("-date_joined", "-id")
    inlines = (MembershipInline,)
    date_hierarchy = "date_joined"

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # An account's type decides what it may do (bid, or post jobs); it is fixed at sign-up.
        return ("account_type", "last_login", "date_joined")

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()


@admin.register(Organization)
class OrganizationAdmin(NoAddDeleteMixin, admin.ModelAdmin):
    """Organizations are created by company sign-up, together with their first owner."""

    list_display = ("name", "slug", "member_count", "job_count", "created_at")
    list_filter = ("created_at",)
    search_fields = ("name", "slug", "memberships__user__email")
    readonly_fields = ("created_at", "updated_at")
    inlines = (OrganizationMembershipInline,)
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(member_count=Count("memberships", distinct=True), job_count=Count("jobs", distinct=True))
        )

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, organization: Organization) -> int:
        return organization.member_count

    @admin.display(description="Jobs", ordering="job_count")
    def job_count(self, organization: Organization) -> int:
        return organization.job_count


@admin.register(Membership)
class MembershipAdmin(ReadOnlyModelAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", "created_at")
    search_fields = ("user__email", "organization__name", "organization__slug")
    list_select_related = ("user", "organization")


@admin.register(EngineerProfile)
class EngineerProfileAdmin(NoAddDeleteMixin, admin.ModelAdmin):
    list_display = ("user", "headline", "jobs_passed", "best_certified_speedup", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("user__email", "user__name", "headline")
    list_select_related = ("user",)
    editable_fields = ("headline", "skills", "hardware_expertise")

    def get_readonly_fields(self, request, obj=None):
        # The track record is written only from signed verification results.
        return [name for name in model_field_names(EngineerProfile) if name not in self.editable_fields]

    def save_model(self, request, obj: EngineerProfile, form, change: bool) -> None:
        engineer_profile_update(user=obj.user, **{name: form.cleaned_data[name] for name in form.changed_data})


class ApiTokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyModelAdmin):
    """Tokens are issued (and shown once) through the API; here they are listed and revoked, never revealed."""

    list_display = (
        "name",
        "user",
        "prefix_display",
        "usable",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (ApiTokenStateFilter, "created_at")
    search_fields = ("name", "prefix", "user__email")
    list_select_related = ("user",)
    exclude = ("token_hash",)
    actions = ("revoke_tokens",)

    def get_readonly_fields(self, request, obj=None):
        return [name for name in super().get_readonly_fields(request, obj) if name != "token_hash"]

    @admin.display(description="Prefix", ordering="prefix")
    def prefix_display(self, token: ApiToken) -> str:
        return f"{token.prefix}…"

    @admin.display(description="Usable", boolean=True)
    def usable(self, token: ApiToken) -> bool:
        return token.is_usable()

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("accounts.change_apitoken")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request, queryset) -> None:
        revoked = 0
        for token in queryset.select_related("user"):
            try:
                api_token_revoke(user=token.user, token_id=token.pk)
            except DomainError as exc:
                self.message_user(request, f"{token}: {exc.message}", messages.ERROR)
            else:
                revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
