"""TF Serving API messages (status, metadata) built from the server's state, and their REST JSON forms.

REST renders them as TF Serving's http_rest_api_util.cc does: protobuf JSON with default values printed;
metadata as {"model_spec": ..., "metadata": {"signature_def": <SignatureDefMap>}} with proto field names.
"""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving.model_manager import VersionStatus
from serving.servable import Servable

SIGNATURE_DEF_FIELD = "signature_def"  # the only metadata field TF Serving supports


def status_response(statuses: list[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = int(status.state)
        entry.status.SetInParent()
        if status.error:
            entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
            entry.status.error_message = status.error
    return response


def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    return signature_map


def metadata_response(servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(servable))
    return response


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict:
    return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def metadata_json(servable: Servable) -> dict:
    response = metadata_response(servable)
    options = {"always_print_fields_with_no_presence": True, "preserving_proto_field_name": True}
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(signature_def_map(servable), **options)},
    }
