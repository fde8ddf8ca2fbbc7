# syntax=docker/dockerfile:1
# Two images, one per deployment (see docs/serving.md):
#
#   serving: TF Serving with a model exported by `python -m serving.export --output exported/metagna`
#     docker build --target serving -t metagna-serving .
#     docker run --rm -p 8500:8500 -p 8501:8501 metagna-serving
#     (REST: http://localhost:8501/v1/models/metagna:predict, gRPC: localhost:8500)
#
#   app: the Gradio app, installed from this repository
#     docker build --target app -t metagna-app .
#     docker run --rm -p 7860:7860 -v "$PWD/exported:/models:ro" metagna-app --model /models/metagna

ARG TF_SERVING_VERSION=2.21.0

# ---- TF Serving ------------------------------------------------------------------------------
FROM tensorflow/serving:${TF_SERVING_VERSION} AS serving
# a model base path written by serving.export: <MODEL_DIR>/<version>/saved_model.pb
ARG MODEL_DIR=exported/metagna
ENV MODEL_NAME=metagna
COPY ${MODEL_DIR} /models/${MODEL_NAME}
EXPOSE 8500 8501
# the base image's entrypoint serves /models/${MODEL_NAME} (MODEL_BASE_PATH=/models)

# ---- Gradio app ------------------------------------------------------------------------------
FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /opt/metagna-tf
COPY pyproject.toml README.md LICENSE ./
COPY metagna_tf ./metagna_tf
COPY serving ./serving
RUN pip install --no-cache-dir ".[cpu]"
RUN useradd --create-home app
USER app
EXPOSE 7860
ENTRYPOINT ["python", "-m", "serving.app", "--host", "0.0.0.0", "--port", "7860"]
CMD ["--model", "/models/metagna"]
