"""The API's generated modules: messages (``types_pb2``, ``audit_pb2``, ``service_pb2``) and the
gRPC stub and servicer (``service_pb2_grpc``), package ``facexplain.v1``.

Import them from here, never from ``_gen`` directly: importing this module first makes sure the
stubs exist and match ``protos/`` (:func:`explainer_service.api.generate.ensure`), so a fresh
checkout or an edited ``.proto`` works without a manual step.
"""

from __future__ import annotations

from .generate import ensure

ensure()

from ._gen import audit_pb2, service_pb2, service_pb2_grpc, types_pb2  # noqa: E402

__all__ = ["types_pb2", "audit_pb2", "service_pb2", "service_pb2_grpc", "MODULES", "SERVICE_NAME", "PROTO_FILES"]

#: Every generated module (what the import test checks next to tritonclient's stubs).
MODULES = ("types_pb2", "types_pb2_grpc", "audit_pb2", "audit_pb2_grpc", "service_pb2", "service_pb2_grpc")
#: The service's full name (health checks per service, reflection): ``facexplain.v1.Facexplain``.
SERVICE_NAME: str = service_pb2.DESCRIPTOR.services_by_name["Facexplain"].full_name
#: The proto files of the API as the descriptors name them.
PROTO_FILES: tuple[str, ...] = tuple(m.DESCRIPTOR.name for m in (types_pb2, audit_pb2, service_pb2))
