from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from channels_adapters.sms.segments import count_segments


class SegmentInput(serializers.Serializer[Any]):
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=4000)


class SegmentCountView(APIView):
    """How many SMS segments a text costs and in which encoding; the composer calls this as you type."""

    @extend_schema(
        request=SegmentInput,
        responses=inline_serializer(
            "SegmentCount",
            {
                "encoding": serializers.CharField(),
                "segments": serializers.IntegerField(),
                "units": serializers.IntegerField(),
                "characters": serializers.IntegerField(),
                "per_segment": serializers.IntegerField(),
                "remaining": serializers.IntegerField(),
                "non_gsm": serializers.ListField(child=serializers.CharField()),
            },
        ),
    )
    def post(self, request: Request) -> Response:
        data = SegmentInput(data=request.data)
        data.is_valid(raise_exception=True)
        count = count_segments(data.validated_data["text"])
        return Response(
            {
                "encoding": count.encoding,
                "segments": count.segments,
                "units": count.units,
                "characters": count.characters,
                "per_segment": count.per_segment,
                "remaining": count.remaining,
                "non_gsm": count.non_gsm[:20],
            }
        )
