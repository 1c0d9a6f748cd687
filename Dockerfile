# The facexplain client image (CPU): alignment, masks, correlation, reports; models run in Triton.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY explainer_service ./explainer_service
RUN pip install .
# facexplain finds the Triton server through FACEXPLAIN_TRITON_URL (set by docker-compose.yml)
CMD ["facexplain", "--help"]
