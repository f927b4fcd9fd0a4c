from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors
from .serializers import SigningKeySerializer


class SigningKeyListApi(APIView):
    """Public keys that sign verification certificates, retired ones included so old ones verify."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=SigningKeySerializer(many=True))
    def get(self, request):
        return Response(SigningKeySerializer(selectors.signing_key_list(), many=True).data)
