from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import IdempotentCreateMixin
from common.errors import NotFound, NotPermitted

from . import selectors, services
from .models import ApiToken, Membership, Organization, OrganizationInvite
from .serializers import (
    ApiTokenCreateSerializer,
    ApiTokenSerializer,
    CompanySignupSerializer,
    EngineerPublicSerializer,
    EngineerSignupSerializer,
    InviteAcceptSerializer,
    InviteCreateSerializer,
    InviteSerializer,
    IssuedInviteSerializer,
    IssuedTokenSerializer,
    MemberAddSerializer,
    MemberRoleSerializer,
    MemberSerializer,
    MeSerializer,
    MeUpdateSerializer,
    MyMembershipSerializer,
    OrganizationSerializer,
)


def _signup_response(user, *, status_code=status.HTTP_201_CREATED) -> Response:
    issued = services.api_token_create(user=user, name="signup")
    body = MeSerializer(user).data
    body["token"] = IssuedTokenSerializer(issued.token, context={"secret": issued.secret}).data
    return Response(body, status=status_code)


class CompanySignupApi(APIView):
    schema_extra_error_statuses = ("404",)  # an unknown invite token
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=CompanySignupSerializer,
        responses={201: MeSerializer},
        description=(
            "A company account. With `organization_name` it owns a new organization; with `invite_token` (and the "
            "invited address as `email`) it joins the inviting organization with the invite's role instead."
        ),
    )
    def post(self, request):
        serializer = CompanySignupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, _ = services.company_signup(**serializer.validated_data)
        return _signup_response(user)


class EngineerSignupApi(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(request=EngineerSignupSerializer, responses={201: MeSerializer})
    def post(self, request):
        serializer = EngineerSignupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.engineer_signup(**serializer.validated_data)
        return _signup_response(user)


class MeApi(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request):
        return Response(MeSerializer(request.user).data)

    @extend_schema(request=MeUpdateSerializer, responses=MeSerializer)
    def patch(self, request):
        serializer = MeUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.me_update(user=request.user, **serializer.validated_data)
        request.user.refresh_from_db()
        return Response(MeSerializer(request.user).data)


class ApiTokenViewSet(IdempotentCreateMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = ApiTokenSerializer
    idempotency_secret_fields = ("token",)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return selectors.api_token_list(user=self.request.user)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: IssuedTokenSerializer})
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    def create_response(self, request, *args, **kwargs):
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.api_token_create(user=request.user, **serializer.validated_data)
        return Response(
            IssuedTokenSerializer(issued.token, context={"secret": issued.secret}).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses={200: ApiTokenSerializer})
    def destroy(self, request, pk=None):
        token = services.api_token_revoke(user=request.user, token_id=int(pk))
        return Response(ApiTokenSerializer(token).data)


class OrganizationViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = OrganizationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Organization.objects.none()
        return Organization.objects.filter(pk__in=selectors.user_organization_ids(user=self.request.user)).order_by(
            "id"
        )


class OrganizationScopedMixin:
    """Views under /organizations/{organization_pk}/: the caller's organization, 404 for anyone else's (the
    services decide who may change what in it)."""

    def _organization(self) -> Organization:
        organization = get_object_or_404(Organization, pk=self.kwargs["organization_pk"])
        if not selectors.user_is_org_member(user=self.request.user, organization_id=organization.pk):
            raise NotFound("No such organization.")
        return organization


class MemberViewSet(OrganizationScopedMixin, IdempotentCreateMixin, viewsets.GenericViewSet, mixins.ListModelMixin):
    serializer_class = MemberSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        return selectors.organization_members(organization=self._organization())

    @extend_schema(request=MemberAddSerializer, responses={201: MemberSerializer})
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    def create_response(self, request, *args, **kwargs):
        serializer = MemberAddSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_add(
            actor=request.user, organization=self._organization(), **serializer.validated_data
        )
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberRoleSerializer, responses=MemberSerializer)
    def partial_update(self, request, organization_pk=None, pk=None):
        membership = get_object_or_404(Membership, pk=pk, organization=self._organization())
        serializer = MemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_change_role(
            actor=request.user, membership=membership, role=serializer.validated_data["role"]
        )
        return Response(MemberSerializer(membership).data)

    def destroy(self, request, organization_pk=None, pk=None):
        membership = get_object_or_404(Membership, pk=pk, organization=self._organization())
        services.membership_remove(actor=request.user, membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EngineerProfileApi(APIView):
    """An engineer's public profile: skills and the track record certified by signed verification results."""

    @extend_schema(responses=EngineerPublicSerializer)
    def get(self, request, user_id: int):
        profile = selectors.engineer_profile_get(user_id=user_id)
        return Response(EngineerPublicSerializer(profile).data)


class InviteViewSet(OrganizationScopedMixin, IdempotentCreateMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """An organization's invites: owners create and revoke them; owners and admins list them."""

    serializer_class = InviteSerializer
    idempotency_secret_fields = ("token",)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return OrganizationInvite.objects.none()
        organization = self._organization()
        if not selectors.user_is_org_admin(user=self.request.user, organization_id=organization.pk):
            raise NotPermitted("Only the organization's owners and admins can see its invites.")
        return selectors.invite_list(organization=organization)

    @extend_schema(request=InviteCreateSerializer, responses={201: IssuedInviteSerializer})
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    def create_response(self, request, *args, **kwargs):
        serializer = InviteCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.invite_create(
            actor=request.user, organization=self._organization(), **serializer.validated_data
        )
        return Response(
            IssuedInviteSerializer(issued.invite, context={"token": issued.token}).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses=InviteSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, organization_pk=None, pk=None):
        invite = selectors.invite_get(organization=self._organization(), invite_id=int(pk))
        invite = services.invite_revoke(actor=request.user, invite=invite)
        return Response(InviteSerializer(invite).data)


class InviteAcceptApi(APIView):
    """The signed-in invitee accepts: the account's email must be the invited address. Without an account, sign up
    with the token instead (`POST /auth/signup/company/` with `invite_token`)."""

    schema_extra_error_statuses = ("404",)  # an unknown invite token

    @extend_schema(request=InviteAcceptSerializer, responses=MyMembershipSerializer)
    def post(self, request):
        serializer = InviteAcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.invite_accept(user=request.user, token=serializer.validated_data["token"])
        return Response(MyMembershipSerializer(membership).data)
