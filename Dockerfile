# Container images of the gateway and the worker (the runbook's "Deploying Updates"):
#
#   docker build -t helixagent:1.0.0 .                                  # the API and `helixagent` CLI (default target)
#   docker build --target helixagent-worker -t helixagent-worker:1.0.0 .
#
# docker-compose.yml builds both when they are missing. The final images are Microsoft's ASP.NET Core runtime image
# with the published app in /app, running as the image's non-root user ($APP_UID, 1654) on port 8080. SDK_IMAGE and
# RUNTIME_IMAGE pick other base images (a mirror, or a pinned digest).
ARG SDK_IMAGE=mcr.microsoft.com/dotnet/sdk:10.0
ARG RUNTIME_IMAGE=mcr.microsoft.com/dotnet/aspnet:10.0

FROM ${SDK_IMAGE} AS build
WORKDIR /src
# Restore first, from the project files only, so that a change to the code reuses the restored layer.
# (global.json is left out by .dockerignore: the image's SDK is the newest 10.0 feature band, whatever its number.)
COPY Directory.Build.props Directory.Packages.props ./
COPY HelixAgent.Api/HelixAgent.Api.csproj HelixAgent.Api/
COPY HelixAgent.Worker/HelixAgent.Worker.csproj HelixAgent.Worker/
COPY HelixAgent.ServiceDefaults/HelixAgent.ServiceDefaults.csproj HelixAgent.ServiceDefaults/
COPY HelixAgent.Data/HelixAgent.Data.csproj HelixAgent.Data/
RUN dotnet restore HelixAgent.Api/HelixAgent.Api.csproj \
 && dotnet restore HelixAgent.Worker/HelixAgent.Worker.csproj
COPY HelixAgent.Api/ HelixAgent.Api/
COPY HelixAgent.Worker/ HelixAgent.Worker/
COPY HelixAgent.ServiceDefaults/ HelixAgent.ServiceDefaults/
COPY HelixAgent.Data/ HelixAgent.Data/
RUN dotnet publish HelixAgent.Api/HelixAgent.Api.csproj -c Release --no-restore --disable-build-servers -o /out/helixagent \
 && dotnet publish HelixAgent.Worker/HelixAgent.Worker.csproj -c Release --no-restore --disable-build-servers -o /out/helixagent-worker \
 && mkdir -p /out/log /out/ledger

FROM ${RUNTIME_IMAGE} AS helixagent-worker
WORKDIR /app
COPY --from=build /out/helixagent-worker/ ./
ENV ASPNETCORE_HTTP_PORTS=8080
EXPOSE 8080
USER $APP_UID
ENTRYPOINT ["/app/helixagent-worker"]

# Last, so that a plain `docker build .` builds the API.
FROM ${RUNTIME_IMAGE} AS helixagent
WORKDIR /app
COPY --from=build /out/helixagent/ ./
# The runbook's log file (grep "provider error" /var/log/helixagent/app.log), written by the app user, besides the
# console: JSON lines rolling at 50 MB, 5 files at most. Logging__File__Path= (empty) turns it off.
COPY --from=build --chown=$APP_UID /out/log/ /var/log/helixagent/
# The usage ledger's write-ahead journal (rows not yet in PostgreSQL), owned by the app user: mount a volume here
# (Kubernetes: an emptyDir, which outlives container restarts; compose: the helixagent-ledger volume).
COPY --from=build --chown=$APP_UID /out/ledger/ /var/lib/helixagent/ledger/
ENV ASPNETCORE_HTTP_PORTS=8080 \
    PATH=/app:$PATH \
    Logging__File__Path=/var/log/helixagent/app.log \
    Logging__File__MaxBytes=52428800 \
    Logging__File__Keep=5 \
    Ledger__Journal__Path=/var/lib/helixagent/ledger \
    Ledger__Journal__MaxBytes=2147483648
EXPOSE 8080
USER $APP_UID
# `docker exec <container> helixagent keys rotate --name X` runs the CLI (the same binary, on PATH).
ENTRYPOINT ["/app/helixagent"]
