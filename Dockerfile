# The facexplain image (CPU): the client, the gRPC API, the Celery workers and the dashboard; models run
# in Triton.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY explainer_service ./explainer_service
COPY protos ./protos
# the dashboard's Streamlit app (facexplain dashboard finds ./dashboard/app.py under WORKDIR)
COPY dashboard ./dashboard
# the API's stubs are generated from protos/ (not committed), before the package is built
RUN pip install "grpcio-tools==1.81.1" && python explainer_service/api/generate.py && pip install .
# facexplain finds the Triton server through FACEXPLAIN_TRITON_URL (set by docker-compose.yml)
CMD ["facexplain", "--help"]
