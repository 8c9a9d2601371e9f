# liver-agent container: slim Python, non-root, DICOM on 11112, HTTP on 8080.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip install --no-cache-dir --prefix=/install ".[postgres]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/liver-agent --create-home --shell /usr/sbin/nologin liver-agent
COPY --from=build /install /usr/local
ENV LIVER_AGENT_DICOM__HOST=0.0.0.0 \
    LIVER_AGENT_WEB__HOST=0.0.0.0 \
    LIVER_AGENT_STORAGE__SPOOL_DIR=/var/lib/liver-agent/spool \
    LIVER_AGENT_DATABASE__URL=sqlite:////var/lib/liver-agent/agent.db \
    PYTHONUNBUFFERED=1
USER liver-agent
WORKDIR /var/lib/liver-agent
VOLUME ["/var/lib/liver-agent"]
EXPOSE 11112 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["liver-agent", "echo", "LIVERAGENT@127.0.0.1:11112"]
ENTRYPOINT ["liver-agent"]
# Embedded defaults plus the environment above; mount a configuration and pass `serve -c FILE` for more.
CMD ["serve"]
