# syntax=docker/dockerfile:1
# Caddy with the LLM gateway modules, built with xcaddy exactly as .ci/run builds it.
#
#   docker build -f xcaddy.Dockerfile -t caddy-llm-gateway .
#   docker run -p 8000:8000 -v "$PWD/config:/app/config" -v "$PWD/logs:/app/logs" caddy-llm-gateway
#
# /app/config holds the origin's config.yaml, mounted unchanged; /app/logs receives the audit
# database (record.db and its monthly archives). Mount a Caddyfile over /app/Caddyfile to use
# the full Caddyfile syntax instead.

FROM golang:1.26 AS builder
# Pinned: the Caddy release the module is tested against, and the xcaddy version CI uses.
ARG CADDY_VERSION=v2.11.9
ARG XCADDY_VERSION=v0.4.5
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The module path is not published: GOPRIVATE stops the go command from asking the module
# proxy for it (the proxy answers 400 and the build would fail). CGO is off (the SQLite driver
# is pure Go) so the binary does not depend on the builder's glibc, which is newer than
# bookworm's.
RUN CGO_ENABLED=0 GOPRIVATE=github.com/llmgw/caddy-llm-gateway \
	go run github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION} build ${CADDY_VERSION} \
	--with github.com/llmgw/caddy-llm-gateway@v0.0.0-00010101000000-000000000000=./ --output /out/caddy \
	&& /out/caddy list-modules | grep -qx 'http.handlers.llm_gateway'

FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates tzdata \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/caddy /usr/bin/caddy
COPY examples/docker/Caddyfile /app/Caddyfile

WORKDIR /app
# The origin's variable for the audit database, relative to /app (a bare llm_audit reads it).
ENV RECD_PATH=sqlite:./logs/record.db
VOLUME ["/app/config", "/app/logs"]
EXPOSE 8000

# Reload after editing the Caddyfile: docker exec <container> caddy reload --config /app/Caddyfile
# (edits to config/config.yaml apply by themselves within 2 s).
CMD ["caddy", "run", "--config", "/app/Caddyfile", "--adapter", "caddyfile"]
