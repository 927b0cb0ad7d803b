# The roomcast app image: the static roomcast binaries on scratch, run as a non-root user.
# `just build TAG` compiles them (CGO_ENABLED=0) and stages bin/image-root/ in a build
# context of its own (a temporary directory, with this file), so building this pulls
# nothing:
#   bin/image-root/usr/local/bin/roomcast{,-smoke,-loadgen,...}
#   bin/image-root/etc/passwd, etc/group      (user roomcast, 10001)
#   bin/image-root/etc/ssl/certs/ca-certificates.crt
FROM scratch
COPY bin/image-root/ /
USER 10001:10001
ENV ROOMCAST_ADDR=:8080
EXPOSE 8080
# Exec form: a scratch image has no shell, and a string form would become CMD-SHELL.
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/roomcast", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/roomcast"]
