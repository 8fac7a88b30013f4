# The sweep image: `sweep worker` by default, `sweep dashboard` (optuna-dashboard) and
# `sweep serve` (the prediction service) with the same image. Configuration comes only from the environment at run time (SWEEP_STORAGE,
# SWEEP_CAMPAIGN, SWEEP_ARTIFACTS): nothing secret is baked into the image.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=3

# A fixed, numeric non-root user (Kubernetes' runAsNonRoot needs a numeric UID). /artifacts
# exists and belongs to it so a named volume mounted there starts out writable by it.
RUN groupadd --system --gid 10001 sweep \
    && useradd --system --uid 10001 --gid sweep --create-home --home-dir /home/sweep \
        --shell /usr/sbin/nologin sweep \
    && install -d -o sweep -g sweep -m 0755 /artifacts

# Only what the package build needs, so the layer cache survives edits to tests and docs.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sweep/ sweep/
COPY storage/ storage/
# `.` is this checkout, not a registry package: DL3013 (pin pip versions) does not apply. The
# serve extra (uvicorn, Starlette, orjson, tf2onnx, onnx, onnxruntime) is what `sweep serve`
# needs to answer in milliseconds, and `sweep pull --format onnx`.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]"

USER 10001:10001
WORKDIR /home/sweep
EXPOSE 8080 8500

ENTRYPOINT ["sweep"]
CMD ["worker"]
