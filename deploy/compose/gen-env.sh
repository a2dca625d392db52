#!/bin/sh
# Prints a .env for compose.yaml with fresh random secrets; write it under
# umask 077 so that only you can read it:
#   (umask 077; ./gen-env.sh > .env)
# Keep .env: BERTH_SECRET_KEY seals stored secrets, and a new one cannot
# open what the old one sealed. env.example lists the same variables.
# BERTH_EXTERNAL_URL is left empty: the token realm is then taken from the
# host name each client used (docker login HOST:5000 works from any
# machine). Set it (https://registry.example.com) when TLS ends in front of
# HAProxy, and for the links in notifications.
set -eu
rand() { openssl rand -hex 16; }
cat <<EOT
POSTGRES_PASSWORD=$(rand)
MINIO_ROOT_USER=minioadmin
MINIO_ROOT_PASSWORD=$(rand)
BERTH_S3_ACCESS_KEY=berth
BERTH_S3_SECRET_KEY=$(rand)
BERTH_SECRET_KEY=$(openssl rand -base64 32)
GRAFANA_ADMIN_PASSWORD=$(rand)
BERTH_EXTERNAL_URL=
EOT
