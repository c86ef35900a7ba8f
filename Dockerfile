# syntax=docker/dockerfile:1
#
# sipwarden container image: a static Go binary on distroless, running as
# the non-root user nonroot (65532).
#
#   docker build -t sipwarden .
#   docker build --build-arg VERSION=v0.1.0 -t sipwarden:v0.1.0 .
#
# Capabilities. sipwarden needs two, and nothing else:
#   CAP_NET_ADMIN  write bans into the kernel ipsets (netlink)
#   CAP_NET_RAW    capture SIP on sip.capture_interface (AF_PACKET)
# Docker's --cap-add does not make a non-root process capable: it only
# allows the capability (bounding set). So the binary carries them as file
# capabilities (setcap cap_net_admin,cap_net_raw=ep). BuildKit, the default
# builder since Docker 23, keeps them across COPY --from. Run the image with
# both allowed:
#
#   docker run --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW \
#     --network host -v /etc/sipwarden:/etc/sipwarden:ro \
#     -v sipwarden-state:/var/lib/sipwarden sipwarden
#
# The kernel refuses to execute a binary whose file capabilities exceed the
# container's bounding set ("exec ... operation not permitted"). Give the two
# capabilities even for `replay`/`check`, or build with --build-arg SETCAP=0
# (then only ban.backend: dry-run and HEP work as non-root).
#
# Bans must land in the network namespace FreeSWITCH receives SIP in: run
# with --network host next to a host FreeSWITCH, or share FreeSWITCH's
# container namespace (network_mode: service:freeswitch, see
# docker-compose.yml).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/sipwarden/sipwarden/internal/daemon.Version=${VERSION}" \
      -o /out/sipwarden ./cmd/sipwarden
ARG SETCAP=1
RUN if [ "$SETCAP" = 1 ]; then \
      apt-get update && apt-get install -y --no-install-recommends libcap2-bin && \
      setcap cap_net_admin,cap_net_raw=ep /out/sipwarden && getcap /out/sipwarden; \
    fi
# The state directory, owned by nonroot (distroless has no shell to mkdir).
RUN mkdir -p /out/state && chown 65532:65532 /out/state && chmod 0750 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sipwarden /usr/local/bin/sipwarden
COPY --from=build /out/state /var/lib/sipwarden
COPY examples/sipwarden.yaml /etc/sipwarden/sipwarden.yaml
USER 65532:65532
VOLUME ["/var/lib/sipwarden"]
# API and /metrics (api.listen), HEP (sip.hep_listen).
EXPOSE 9091/tcp 9060/udp
ENTRYPOINT ["/usr/local/bin/sipwarden"]
CMD ["run", "-config", "/etc/sipwarden/sipwarden.yaml"]
