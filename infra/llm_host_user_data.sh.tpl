#!/bin/bash
# cloud-init user data for the QCKSTRT Ollama GPU host, rendered by infra/llm_host.py.
# Placeholders are string.Template fields (delimiter: two at-signs); the rest is plain bash.
# Log: /var/log/qckstrt-ollama-setup.log (also in the EC2 console output).
set -euo pipefail
exec > >(tee -a /var/log/qckstrt-ollama-setup.log) 2>&1

OLLAMA_MODEL='@@{model}'
OLLAMA_VERSION='@@{ollama_version}'
OLLAMA_BIND='0.0.0.0:@@{port}'

echo "qckstrt: installing Ollama ${OLLAMA_VERSION:-latest}, model ${OLLAMA_MODEL}"

# 1. Install Ollama. The network may not be up at first boot: retry the download.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  if curl -fsSL --retry 3 https://ollama.com/install.sh -o /tmp/ollama-install.sh; then
    break
  fi
  echo "qckstrt: Ollama installer download failed (attempt ${attempt}), retrying"
  sleep $((attempt * 15))
done
OLLAMA_VERSION="${OLLAMA_VERSION}" sh /tmp/ollama-install.sh

# 2. Serve on all interfaces (the security group admits only the app and the VPC).
mkdir -p /etc/systemd/system/ollama.service.d
cat > /etc/systemd/system/ollama.service.d/10-qckstrt.conf <<UNIT
[Service]
Environment="OLLAMA_HOST=${OLLAMA_BIND}"
Environment="OLLAMA_KEEP_ALIVE=24h"
Restart=always
RestartSec=5
UNIT

# 3. Pull the model until it succeeds, as a service of its own: a pull can fail on a slow
#    or interrupted download, and must not block or fail cloud-init.
cat > /usr/local/bin/qckstrt-ollama-pull <<'PULL'
#!/bin/bash
set -u
model="$1"
delay=10
until curl -fs "http://127.0.0.1:@@{port}/api/version" >/dev/null; do sleep 2; done
until ollama pull "${model}"; do
  echo "qckstrt: ollama pull ${model} failed, retrying in ${delay}s"
  sleep "${delay}"
  delay=$(( delay < 300 ? delay * 2 : 300 ))
done
echo "qckstrt: model ${model} is ready"
PULL
chmod 0755 /usr/local/bin/qckstrt-ollama-pull

cat > /etc/systemd/system/qckstrt-ollama-pull.service <<UNIT
[Unit]
Description=Pull the QCKSTRT Ollama model (${OLLAMA_MODEL}), retrying until it succeeds
After=ollama.service network-online.target
Wants=network-online.target
Requires=ollama.service

[Service]
Type=oneshot
Environment="OLLAMA_HOST=127.0.0.1:@@{port}"
ExecStart=/usr/local/bin/qckstrt-ollama-pull ${OLLAMA_MODEL}
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable ollama.service qckstrt-ollama-pull.service
systemctl restart ollama.service
systemctl start --no-block qckstrt-ollama-pull.service
echo "qckstrt: Ollama is serving on ${OLLAMA_BIND}"
