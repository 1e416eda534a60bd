FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 STATIC_ROOT=/app/staticfiles
WORKDIR /app
# TORCH_INDEX_URL picks the torch build (empty: PyPI's default CUDA build; PyTorch's CPU index for CPU).
ARG TORCH_INDEX_URL=""
COPY pyproject.toml requirements.lock ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
COPY . .
RUN pip install -c requirements.lock . && SECRET_KEY=build python manage.py collectstatic --noinput
EXPOSE 8000
