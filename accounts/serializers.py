from rest_framework import serializers

from .models import ApiToken, EngineerProfile, Membership, Organization, User

EMAIL_MAX_CHARS = 254  # the model's column
PROFILE_LIST_MAX_ITEMS = 50
PROFILE_LIST_ITEM_MAX_CHARS = 50


def _profile_list(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=PROFILE_LIST_ITEM_MAX_CHARS), max_length=PROFILE_LIST_MAX_ITEMS, **kwargs
    )


class CompanySignupSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=EMAIL_MAX_CHARS)
    password = serializers.CharField(write_only=True, min_length=10, max_length=128)
    name = serializers.CharField(max_length=150)
    organization_name = serializers.CharField(max_length=200)


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
