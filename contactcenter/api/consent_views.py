from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contactcenter import selectors
from contactcenter.actions.consent import record_consent
from contactcenter.api.common import InboxStaff, staff_of
from contactcenter.api.shapes import Patient360Shape
from contactcenter.models import ConsentPurpose, ConsentSource, ConsentStatus, Message


class ConsentInput(serializers.Serializer[Any]):
    purpose = serializers.ChoiceField(choices=ConsentPurpose.choices)
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    channel = serializers.CharField(max_length=20, required=False, allow_blank=True, default="")
    message_id = serializers.IntegerField(required=False, min_value=1)


class PatientConsentView(APIView):
    """Staff record a consent change, e.g. confirming a "please stop texting me" flagged by the system."""

    permission_classes = [InboxStaff]

    @extend_schema(request=ConsentInput, responses={201: Patient360Shape})
    def post(self, request: Request, patient_id: int) -> Response:
        patient = selectors.patient_for(user=request.user, patient_id=patient_id)
        if patient is None:
            raise NotFound("No such patient.")
        data = ConsentInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        message = None
        if values.get("message_id"):
            message = Message.objects.filter(pk=values["message_id"], conversation__patient=patient).first()
        record_consent(
            patient=patient,
            purpose=values["purpose"],
            status=values["status"],
            source=ConsentSource.AGENT,
            channel=values["channel"],
            message=message,
            actor=staff_of(request),
        )
        return Response(selectors.patient_360(user=request.user, patient=patient), status=status.HTTP_201_CREATED)
