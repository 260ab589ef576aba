# engine-init: the first-boot job that makes TensorRT engines ready on a Jetson.
#
# Bases (they must carry TensorRT's Python bindings and builder), each with its pinned packages
# in docker/constraints/<CONSTRAINTS>.txt:
#   JetPack 6.1 / 6.2 (TensorRT 10.3):  nvcr.io/nvidia/l4t-tensorrt:r10.3.0-devel   (default)
#                                       CONSTRAINTS=l4t-tensorrt-r10.3.0              (default)
#   JetPack 6.0       (TensorRT 8.6.2): nvcr.io/nvidia/l4t-tensorrt:r8.6.2-devel
#                                       CONSTRAINTS=l4t-tensorrt-r8.6.2
#   JetPack 5.1       (TensorRT 8.5.2): nvcr.io/nvidia/l4t-tensorrt:r8.5.2.2-devel (ships Python 3.8:
#                                       engine-init needs >= 3.10, add one to the image first)
#   x86 dGPU          (TensorRT 10.3):  nvcr.io/nvidia/tensorrt:24.08-py3
#                                       CONSTRAINTS=tensorrt-24.08-py3
# CI builds it on a locally made Debian base with REQUIRE_TENSORRT=0, EXTRAS=onnxruntime and
# CONSTRAINTS=ci-debian-bookworm.
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-tensorrt:r10.3.0-devel
FROM ${BASE_IMAGE}

ARG CONSTRAINTS=l4t-tensorrt-r10.3.0

ARG REQUIRE_TENSORRT=1
ARG EXTRAS=onnxruntime,cuda
ARG PIP_NO_INDEX=
ARG APP_UID=10001

USER root
# Fail early on a base that claims TensorRT but cannot import it.
RUN if [ "$REQUIRE_TENSORRT" = "1" ]; then \
      python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)"; \
    fi

# A venv that still sees the base image's TensorRT bindings (installed system-wide).
RUN python3 -m venv --system-site-packages /opt/engine-init
COPY docker/constraints/ docker/wheels/ /tmp/wheels/
COPY pyproject.toml README.md /src/
COPY app /src/app
RUN /opt/engine-init/bin/pip install --no-cache-dir --disable-pip-version-check \
      ${PIP_NO_INDEX:+--no-index --find-links /tmp/wheels} \
      -c "/tmp/wheels/${CONSTRAINTS}.txt" "/src[${EXTRAS}]" \
 && rm -rf /tmp/wheels /src \
 && /opt/engine-init/bin/python -c "import app"

COPY entrypoint.py /opt/engine-init/entrypoint.py
COPY config/engine-init.yaml /etc/engine-init/config.yaml

# Non-root: the cache volume must be writable by this uid (README: Permissions).
RUN (getent group ${APP_UID} || groupadd --gid ${APP_UID} engine-init) \
 && useradd --uid ${APP_UID} --gid ${APP_UID} --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin engine-init \
 && mkdir -p /var/cache/engine-init /run/engine-init \
 && chown ${APP_UID}:${APP_UID} /var/cache/engine-init /run/engine-init

# No .pyc writes (read-only root filesystem); temp files go to the /tmp tmpfs.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
USER ${APP_UID}:${APP_UID}
ENTRYPOINT ["/opt/engine-init/bin/python", "/opt/engine-init/entrypoint.py"]
CMD ["run"]
