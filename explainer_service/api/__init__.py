"""The gRPC API of the service: contract, generated stubs and conversions (``facexplain.v1``).

The contract is ``protos/facexplain/v1/*.proto`` (its comments are the reference): ``types.proto``
(arrays, images, parameters, models, methods, explained pairs, jobs), ``audit.proto`` (audit
requests, rows, summaries) and ``service.proto`` (the ``Facexplain`` service: Verify, Explain,
WatchJob, GetJob, GetResult, SubmitAudit, CancelJob, DeleteJob, ListJobs, ListModels,
ListMethods, ListDatasetPairs, GetDatasetPair; health and reflection are grpc's standard services).

Modules:

- :mod:`.pb`: the generated modules (``types_pb2``, ``audit_pb2``, ``service_pb2``,
  ``service_pb2_grpc``); import them from there.
- :mod:`.convert`: library values <-> messages (results with exact maps, parameters, models,
  methods, errors); pure functions.
- :mod:`.generate`: ``python -m explainer_service.api.generate`` builds the stubs.

Where the stubs live, and why. protoc names its imports after the proto path: compiled with
``-Iprotos``, ``service_pb2`` says ``from facexplain.v1 import types_pb2``, which would need a
top-level ``facexplain`` package (none exists: the distribution is called facexplain, the package
``explainer_service``) and a ``sys.path`` entry that only a checkout has. So the stubs are
generated into this package, ``explainer_service/api/_gen/`` (flat: ``types_pb2.py``...), and
the generator rewrites those imports to relative ones (``from . import types_pb2``). Plain
relative imports resolve the same way in a checkout, an editable install and a wheel built from a
checkout where they were generated; nothing touches ``sys.path``, and the descriptors keep
their proto file names (``facexplain/v1/types.proto``), so reflection shows the API as written.
The stubs are not committed (``.gitignore``): ``make setup`` builds them (``api-stubs``, rebuilt
when a ``.proto`` changes), and importing :mod:`.pb` in a checkout regenerates them if they are
missing or stale, so tests and tools never run against an old contract. protoc's ``--pyi_out``
types the messages for mypy; the generator adds typed ``*_pb2_grpc.pyi`` for the stub and
servicer (protoc writes none).

Nothing here imports the server, the workers or the store: clients (the CLI client, the
dashboard) depend on this package alone.
"""

from __future__ import annotations

__all__: list[str] = []
