# The sweep image: `sweep worker` by default, `sweep dashboard` (optuna-dashboard) and
# `sweep serve` (the prediction service) with the same image. Configuration comes only from the
# environment at run time (SWEEP_STORAGE, SWEEP_CAMPAIGN, SWEEP_ARTIFACTS): nothing secret is
# baked into the image.
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
COPY pyproject.toml README.md constraints.txt ./
COPY sweep/ sweep/
COPY storage/ storage/
# Every package at the version pinned in constraints.txt (the versions the tests ran against;
# `.venv/bin/python compose/refresh_constraints.py` rewrites it), so two builds install the same
# packages. `.` is this checkout, not a registry package: DL3013 (pin pip versions) does not
# apply. The serve extra (uvicorn, Starlette, orjson, tf2onnx, onnx, onnxruntime) is what
# `sweep serve` needs to answer in milliseconds, and `sweep pull --format onnx`; the s3 extra
# (boto3) keeps artifacts in a bucket every host reaches (`SWEEP_ARTIFACTS=s3://BUCKET/PREFIX`).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c constraints.txt ".[serve,s3]"

# The entry point (`sweep ARGS`; a worker under a restart policy where exit 2 is final) and the
# health check. Copied after the install: editing them does not reinstall the packages.
COPY compose/entrypoint.py compose/healthcheck.py /usr/local/lib/sweep-image/

USER 10001:10001
WORKDIR /home/sweep
EXPOSE 8080 8500

# serve: ready once a model is loaded (GET /healthz lists one); dashboard: GET /api/studies
# answers; worker: the worker process runs. Python's urllib, no curl. The first model load (the
# .keras -> ONNX conversion, TensorFlow started once) takes 10-30 s: hence the start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/lib/sweep-image/healthcheck.py"]

ENTRYPOINT ["python", "/usr/local/lib/sweep-image/entrypoint.py"]
CMD ["worker"]
