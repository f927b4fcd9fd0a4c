from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import ApiToken, EngineerProfile, Membership, Organization, OrganizationInvite, User

EMAIL_MAX_CHARS = 254  # the model's column
PROFILE_LIST_MAX_ITEMS = 50
PROFILE_LIST_ITEM_MAX_CHARS = 50


def _profile_list(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=PROFILE_LIST_ITEM_MAX_CHARS), max_length=PROFILE_LIST_MAX_ITEMS, **kwargs
    )


INVITE_TOKEN_MAX_CHARS = 100


class CompanySignupSerializer(serializers.Serializer):
    """Either `organization_name` (a new organization the account owns) or `invite_token` (join the inviting
    organization with the invite's role; `email` must be the invited address)."""

    email = serializers.EmailField(max_length=EMAIL_MAX_CHARS)
    password = serializers.CharField(write_only=True, min_length=10, max_length=128)
    name = serializers.CharField(max_length=150)
    organization_name = serializers.CharField(max_length=200, required=False, default="")
    invite_token = serializers.CharField(
        max_length=INVITE_TOKEN_MAX_CHARS,
        required=False,
        default="",
        write_only=True,
        help_text="An organization invite's token: join that organization instead of creating one.",
    )

    def validate(self, attrs):
        if attrs["invite_token"] and attrs["organization_name"]:
            raise serializers.ValidationError(
                {"organization_name": ["Leave it out when joining with invite_token."]}, code="invalid"
            )
        if not attrs["invite_token"] and not attrs["organization_name"]:
            raise serializers.ValidationError({"organization_name": ["This field is required."]}, code="required")
        return attrs


class EngineerSignupSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=EMAIL_MAX_CHARS)
    password = serializers.CharField(write_only=True, min_length=10, max_length=128)
    name = serializers.CharField(max_length=150)
    headline = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    skills = _profile_list(required=False, default=list)
    hardware_expertise = _profile_list(required=False, default=list)


class EngineerProfileSerializer(serializers.ModelSerializer):
    class Meta:
        model = EngineerProfile
        fields = [
            "headline",
            "skills",
            "hardware_expertise",
            "jobs_passed",
            "best_certified_speedup",
            "certified_results",
        ]
        read_only_fields = ["jobs_passed", "best_certified_speedup", "certified_results"]


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "created_at"]


class MyMembershipSerializer(serializers.ModelSerializer):
    organization = OrganizationSerializer()

    class Meta:
        model = Membership
        fields = ["organization", "role"]


class MeSerializer(serializers.ModelSerializer):
    memberships = MyMembershipSerializer(many=True, read_only=True)
    engineer_profile = EngineerProfileSerializer(read_only=True)

    class Meta:
        model = User
        fields = ["id", "email", "name", "account_type", "is_staff", "memberships", "engineer_profile"]
        read_only_fields = ["id", "email", "account_type", "is_staff"]


class MeUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=150, required=False)
    headline = serializers.CharField(max_length=200, required=False, allow_blank=True)
    skills = _profile_list(required=False)
    hardware_expertise = _profile_list(required=False)


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    name = serializers.CharField(source="user.name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "name", "role", "created_at"]


class MemberAddSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=EMAIL_MAX_CHARS)
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class IssuedTokenSerializer(ApiTokenSerializer):
    """Only the creating response carries the secret; it is never retrievable again."""

    token = serializers.SerializerMethodField()

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]

    def get_token(self, obj) -> str:
        return self.context["secret"]


class EngineerPublicSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="user_id")
    name = serializers.CharField(source="user.name")

    class Meta:
        model = EngineerProfile
        fields = [
            "id",
            "name",
            "headline",
            "skills",
            "hardware_expertise",
            "jobs_passed",
            "best_certified_speedup",
            "certified_results",
        ]


class InviteSerializer(serializers.ModelSerializer):
    """An invite as its organization's owners and admins see it; never its token or the token's hash."""

    status = serializers.SerializerMethodField()
    invited_by = serializers.SerializerMethodField()

    class Meta:
        model = OrganizationInvite
        fields = [
            "id",
            "organization",
            "email",
            "role",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]

    @extend_schema_field(serializers.ChoiceField(choices=OrganizationInvite.Status.choices))
    def get_status(self, invite: OrganizationInvite) -> str:
        return invite.status_at()

    def get_invited_by(self, invite: OrganizationInvite) -> dict | None:
        if invite.invited_by_id is None:
            return None
        return {"id": invite.invited_by_id, "name": invite.invited_by.name}


class IssuedInviteSerializer(InviteSerializer):
    """Only the creating response carries the token (to send to the invitee); it is never retrievable again."""

    token = serializers.SerializerMethodField()

    class Meta(InviteSerializer.Meta):
        fields = [*InviteSerializer.Meta.fields, "token"]

    def get_token(self, invite: OrganizationInvite) -> str:
        return self.context["token"]


class InviteCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=EMAIL_MAX_CHARS)
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)


class InviteAcceptSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=INVITE_TOKEN_MAX_CHARS, write_only=True)
